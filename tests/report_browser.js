// Appended to a copy of a Snakemake report by tests/test_report.py and run in headless Chromium: loads every
// image result and the <video> of every HTML result in this page, writes what loaded into the title (read back
// from --dump-dom), and shows the contact sheet in the report's own view for the screenshot.
window.addEventListener("load", async () => {
  const out = { images: {}, videos: {} };
  const loads = [];
  for (const [path, entry] of Object.entries(results)) {
    if (entry.mime_type.startsWith("image/")) {
      loads.push(new Promise((done) => {
        const img = new Image();
        img.onload = () => { out.images[path] = [img.naturalWidth, img.naturalHeight]; done(); };
        img.onerror = () => { out.images[path] = "error"; done(); };
        img.src = entry.data_uri;
      }));
    } else if (entry.mime_type === "text/html") {
      const page = await (await fetch(entry.data_uri)).text();
      const video = new DOMParser().parseFromString(page, "text/html").querySelector("video");
      if (!video) continue;
      loads.push(new Promise((done) => {
        const v = document.createElement("video");
        v.muted = true;
        v.onloadeddata = () => { out.videos[path] = [v.videoWidth, v.videoHeight, v.duration]; done(); };
        v.onerror = () => { out.videos[path] = "error " + (v.error && v.error.code); done(); };
        v.src = video.getAttribute("src");
      }));
    }
  }
  await Promise.all(loads);
  const sheet = Object.keys(results).find((path) => path.endsWith("contact_sheet.png"));
  app.showCategory("Frames");
  app.setView({ content: "img", contentPath: results[sheet].data_uri, resultPath: sheet });
  document.title = "CHECKED " + JSON.stringify(out);
});

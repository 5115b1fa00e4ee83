// Appended to a copy of a Snakemake report by tests/test_report.py and run in headless Chromium: loads every
// image result and the <video> of every HTML result in this page, writes what loaded into the title (read back
// from --dump-dom), and shows the contact sheet in the report's own view for the screenshot.
// The images and videos are hidden elements of this document, made while it is parsed, so that its load event
// waits for them (img and video delay it until they have loaded or failed): headless Chromium's
// --virtual-time-budget does not wait on a video's decoding, which on a busy machine outlasted it.
const out = { images: {}, videos: {} };
const hidden = (element) => { element.style.display = "none"; document.body.appendChild(element); return element; };
const decoded = (uri) => new TextDecoder().decode(Uint8Array.from(atob(uri.split(",")[1]), (c) => c.charCodeAt(0)));
for (const [path, entry] of Object.entries(results)) {
  if (entry.mime_type.startsWith("image/")) {
    const img = new Image();
    img.onload = () => { out.images[path] = [img.naturalWidth, img.naturalHeight]; };
    img.onerror = () => { out.images[path] = "error"; };
    img.src = entry.data_uri;
    hidden(img);
  } else if (entry.mime_type === "text/html") {
    const page = new DOMParser().parseFromString(decoded(entry.data_uri), "text/html");
    const source = page.querySelector("video");
    if (!source) continue;
    const video = document.createElement("video");
    video.muted = true;
    video.preload = "auto";
    video.onloadeddata = () => { out.videos[path] = [video.videoWidth, video.videoHeight, video.duration]; };
    video.onerror = () => { out.videos[path] = "error " + (video.error && video.error.code); };
    video.src = source.getAttribute("src");
    hidden(video);
  }
}
window.addEventListener("load", () => {
  const sheet = Object.keys(results).find((path) => path.endsWith("contact_sheet.png"));
  app.showCategory("Frames");
  app.setView({ content: "img", contentPath: results[sheet].data_uri, resultPath: sheet });
  document.title = "CHECKED " + JSON.stringify(out);
});

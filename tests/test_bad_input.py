"""Bad input against a finished render, tried as a user would: malformed configs, hostile schedule expressions and
config files Snakemake cannot load. Each case must end with exit 1, one line (the last on stderr) that names the
key (and for schedules the text, for evaluation errors the frame), no traceback, and every file of the render
unchanged, nothing added.

One small render is made per module; each case runs `snakemake --cores 1` in its own copy of it (render + the
.snakemake records), so a case that wrongly renders cannot change what another case sees. The cases run two at
a time and every failure is collected into one assertion message."""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import SMALL_CONFIG, last_line, read_only, run_snakemake, write_config

OUT = Path("output") / SMALL_CONFIG["batch_name"]
CASE_CONFIG = "case.yaml"
# A bad config fails while the workflow loads (a few seconds); a case still running after this hangs.
CASE_TIMEOUT = 60
# Lines of a failed run that are not the error: Snakemake's profile notice and our config warnings.
NOT_ERROR_LINES = re.compile(r"^(Using (workflow specific )?profile .* for setting default command line "
                             r"arguments\.|config warning: )")


@dataclass(frozen=True)
class Case:
    name: str
    config: dict[str, Any] | bytes | None  # overrides of the render's config, a raw config file, or no file
    key: str  # the key (or file) the error line must name
    expect: tuple[str, ...] = ()  # more text the error line must hold: the schedule, "frame N", a suggestion
    setup: Callable[[Path], None] | None = None  # prepares the render's copy before the run


def bad(name: str, overrides: dict[str, Any], key: str, *expect: str, setup=None) -> Case:
    return Case(name, overrides, key, expect, setup)


def schedule(name: str, key: str, text: str, *expect: str, **more: Any) -> Case:
    """A bad schedule `key: text` (with `more` keys that put it to use); the line quotes the text when short."""
    return Case(name, {key: text, **more}, key, ((text,) if len(text) <= 80 else ()) + expect)


# ---- setups: what a case needs in the render's copy -------------------------------------------------------

def corrupt_seed_file(workdir: Path) -> None:
    (workdir / OUT / "resolved_seed.txt").write_text("not a seed\n")


THREE_D = {"animation_mode": "3D", "depth_algorithm": "tiny"}

MALFORMED = [
    # unknown keys
    bad("unknown key, a typo", {"zoon": "0:(1.0)"}, "zoon", "did you mean", "zoom"),
    bad("unknown key, a missing s", {"max_frame": 10}, "max_frame", "max_frames"),
    bad("unknown key, letters swapped", {"strenght": 0.5}, "strenght", "strength"),
    bad("unknown key, wrong case", {"Animation_Mode": "3D"}, "Animation_Mode", "animation_mode"),
    bad("unknown key, nothing like it", {"foo_bar_baz": 1}, "foo_bar_baz"),
    # wrong types, one of every kind
    bad("integer given a word", {"max_frames": "six"}, "max_frames"),
    bad("integer given a fraction", {"max_frames": 2.5}, "max_frames"),
    bad("integer given text with a unit", {"W": "64px"}, "W"),
    bad("integer given null", {"steps": None}, "steps"),
    bad("integer given a list", {"seed": [1, 2]}, "seed"),
    bad("integer given a fraction (crf)", {"crf": 17.5}, "crf"),
    bad("number given a word", {"fps": "fast"}, "fps"),
    bad("number given a list", {"strength": [0.5]}, "strength"),
    bad("number given a mapping", {"scale": {"a": 1}}, "scale"),
    bad("boolean given a word", {"use_init": "maybe"}, "use_init"),
    bad("boolean given 3", {"save_settings": 3}, "save_settings"),
    bad("boolean given a list", {"skip_video": [True]}, "skip_video"),
    bad("enum given a number", {"animation_mode": 2}, "animation_mode"),
    bad("string given a list", {"batch_name": ["a", "b"]}, "batch_name"),
    bad("string given a mapping", {"model": {"name": "builtin:tiny"}}, "model"),
    bad("list given a mapping", {"prompts": {"a": "one prompt"}}, "prompts"),
    bad("mapping given a list", {"animation_prompts": ["a red apple", "a banana"]}, "animation_prompts"),
    bad("mapping given a string", {"animation_prompts": "a red apple"}, "animation_prompts"),
    bad("negative prompts given a number", {"neg_prompts": 5}, "neg_prompts"),
    bad("schedule given a list", {"zoom": [1.0, 1.02]}, "zoom"),
    bad("schedule given a mapping", {"zoom": {0: 1.0}}, "zoom"),
    bad("schedule given a boolean", {"angle": True}, "angle"),
    bad("sampler schedule given a number", {"sampler_schedule": 5, "enable_schedule_samplers": True},
        "sampler_schedule"),
    # out of range
    bad("width 0", {"W": 0}, "W"),
    bad("height below 64", {"H": 32}, "H"),
    bad("max_frames 0", {"max_frames": 0}, "max_frames"),
    bad("max_frames -1", {"max_frames": -1}, "max_frames"),
    bad("max_frames a billion", {"max_frames": 1_000_000_000}, "max_frames"),
    bad("fps 0", {"fps": 0}, "fps"),
    bad("fps negative", {"fps": -12}, "fps"),
    bad("fps infinite", {"fps": float("inf")}, "fps"),
    bad("crf 99", {"crf": 99}, "crf"),
    bad("diffusion_cadence 0", {"diffusion_cadence": 0}, "diffusion_cadence"),
    bad("diffusion_cadence 9", {"diffusion_cadence": 9}, "diffusion_cadence"),
    bad("seed -2", {"seed": -2}, "seed"),
    bad("seed above 2**32-1", {"seed": 2**32}, "seed"),
    bad("steps 0", {"steps": 0}, "steps"),
    bad("strength 2", {"strength": 2}, "strength"),
    bad("strength negative", {"strength": -0.1}, "strength"),
    bad("strength NaN", {"strength": float("nan")}, "strength"),
    bad("midas_weight 5", {"midas_weight": 5}, "midas_weight"),
    bad("perlin_octaves 0", {"perlin_octaves": 0, "noise_type": "perlin"}, "perlin_octaves"),
    bad("extract_nth_frame 0", {"extract_nth_frame": 0}, "extract_nth_frame"),
    bad("extract_to_frame -5", {"extract_to_frame": -5}, "extract_to_frame"),
    bad("interpolate_x_frames -1", {"interpolate_x_frames": -1}, "interpolate_x_frames"),
    # bad choices
    bad("animation_mode 4D", {"animation_mode": "4D"}, "animation_mode"),
    bad("sampler unknown", {"sampler": "euler_b"}, "sampler"),
    bad("color_coherence unknown", {"color_coherence": "Match Frame 0 XYZ"}, "color_coherence"),
    bad("border unknown", {"border": "mirror"}, "border"),
    bad("noise_type unknown", {"noise_type": "gaussian"}, "noise_type"),
    bad("padding_mode unknown", {"padding_mode": "edge"}, "padding_mode"),
    bad("codec unknown", {"codec": "vp9"}, "codec"),
    bad("seed_behavior unknown", {"seed_behavior": "sometimes"}, "seed_behavior"),
    bad("depth_algorithm unknown", {"depth_algorithm": "midas-4"}, "depth_algorithm"),
    bad("model_sha256 not hex", {"model_sha256": "xyz"}, "model_sha256"),
    # schedule syntax
    schedule("schedule: missing colon", "zoom", "0:(1.0), 3 (1.02)"),
    schedule("schedule: missing comma", "zoom", "0:(1.0) 3:(1.02)"),
    schedule("schedule: unbalanced parenthesis", "zoom", "0:(1.0"),
    schedule("schedule: unbalanced nested parenthesis", "angle", "0:(sin(t)"),
    schedule("schedule: empty value", "translation_x", "0:()"),
    schedule("schedule: bad frame key", "zoom", "x:(1.0)"),
    schedule("schedule: unknown function", "angle", "0:(foo(t))"),
    schedule("schedule: unknown variable", "angle", "0:(q*2)"),
    schedule("schedule: a string value", "angle", "0:('abc')"),
    schedule("schedule: attribute access", "angle", "0:(t.real)"),
    schedule("schedule: dunder name", "angle", "0:(__import__)"),
    # schedule values, checked per frame
    schedule("strength_schedule 2.5", "strength_schedule", "0:(2.5)", "frame 0"),
    schedule("strength_schedule above 1 from frame 3", "strength_schedule", "0:(0.5+t/4)", "frame 3"),
    schedule("zoom infinite", "zoom", "0:(1e999)", "frame 0"),
    schedule("zoom 0", "zoom", "0:(0)", "frame 0"),
    schedule("zoom reaching 0 at frame 1", "zoom", "0:(1-t)", "frame 1"),
    schedule("angle 0/0", "angle", "0:(t/(t-t))", "frame 0"),
    schedule("angle log of a negative", "angle", "0:(log(t-5))", "frame 0"),
    schedule("translation_x infinite", "translation_x", "0:(1e308*10)", "frame 0"),
    schedule("fov 0 in 3D", "fov_schedule", "0:(0)", "frame 0", **THREE_D),
    schedule("fov 180 in 3D", "fov_schedule", "0:(180)", "frame 0", **THREE_D),
    schedule("steps_schedule 0", "steps_schedule", "0:(0)", "frame 0", enable_steps_scheduling=True),
    schedule("steps_schedule infinite", "steps_schedule", "0:(1e999)", "frame 0", enable_steps_scheduling=True),
    schedule("cfg_scale_schedule 0", "cfg_scale_schedule", "0:(0)", "frame 0"),
    schedule("noise_schedule negative", "noise_schedule", "0:(-0.1)", "frame 0"),
    schedule("contrast_schedule negative", "contrast_schedule", "0:(-1)", "frame 0"),
    schedule("seed_schedule infinite", "seed_schedule", "0:(1e999)", "frame 0", seed_behavior="schedule"),
    schedule("sampler_schedule unknown sampler", "sampler_schedule", "0:('nosuch')", enable_schedule_samplers=True),
    # prompts
    bad("prompts: empty mapping", {"animation_prompts": {}}, "animation_prompts"),
    bad("prompts: every key negative", {"animation_prompts": {0: "--neg blurry", 3: "--neg dark"}},
        "animation_prompts"),
    bad("prompts: every prompt empty", {"animation_prompts": {0: "", 3: ""}}, "animation_prompts"),
    bad("prompts: not text", {"animation_prompts": {0: ["a red apple", "a pear"], 3: "a yellow banana"}},
        "animation_prompts"),
    bad("prompts: two --neg", {"animation_prompts": {0: "an apple --neg blurry --neg dark"}}, "animation_prompts",
        "--neg"),
    bad("prompts: bad frame key", {"animation_prompts": {"abc": "an apple"}}, "animation_prompts", "abc"),
    bad("negative prompts: not text", {"neg_prompts": {0: {"blurry": 1}}}, "neg_prompts"),
    # files
    bad("init_image missing", {"use_init": True, "init_image": "missing.png"}, "init_image", "missing.png"),
    bad("init_image not an image", {"use_init": True, "init_image": "render.yaml"}, "init_image", "render.yaml"),
    bad("mask_file missing", {"use_init": True, "init_image": str(OUT / "frames" / "00000.png"), "use_mask": True,
                              "mask_file": "missing_mask.png"}, "mask_file", "missing_mask.png"),
    bad("use_mask without an init image", {"use_mask": True, "mask_file": str(OUT / "frames" / "00000.png")},
        "use_mask"),
    bad("video_init_path missing", {"animation_mode": "Video Input", "video_init_path": "missing.mp4"},
        "video_init_path", "missing.mp4"),
    bad("color_coherence Image without a path", {"color_coherence": "Image"}, "color_coherence_image_path"),
    bad("color_coherence Image, path missing", {"color_coherence": "Image",
                                                "color_coherence_image_path": "missing.png"},
        "color_coherence_image_path", "missing.png"),
    bad("model file missing", {"model": "models/missing.safetensors"}, "model", "missing.safetensors"),
    bad("model empty", {"model": ""}, "model"),
    bad("check_sha256 on a builtin model", {"check_sha256": True}, "check_sha256"),
    # sizes
    bad("W 100000", {"W": 100_000}, "W"),
    bad("W and H 100000", {"W": 100_000, "H": 100_000}, "W"),
    # the output folder
    bad("output_path is a file", {"output_path": "render.yaml"}, "output_path", "render.yaml"),
    bad("output_path empty", {"output_path": ""}, "output_path"),
    bad("batch_name with a slash", {"batch_name": "a/b"}, "batch_name"),
    bad("resume_timestring of no render", {"resume_from_timestring": True, "resume_timestring": "20990101000000"},
        "resume_timestring"),
    bad("resolved_seed.txt corrupted", {"seed": -1}, "seed", "resolved_seed.txt", setup=corrupt_seed_file),
    # two spellings of one key
    bad("both W and width", {"width": 64}, "width", "W"),
    bad("both model and model_checkpoint", {"model_checkpoint": "builtin:tiny"}, "model_checkpoint"),
]

HOSTILE = [
    schedule("9**9**9 as a value", "zoom", "0:(9**9**9)"),
    schedule("9**9**9 as a frame key", "zoom", '"9**9**9":(1)'),
    schedule("9**9**9*max_f as a frame key", "zoom", '0:(1), "9**9**9*max_f":(1)'),
    schedule("a 20,000-term sum", "angle", "0:(" + "+".join(["t"] * 20_000) + ")"),
    schedule("a 20,000-factor product", "angle", "0:(t" + "*1" * 20_000 + ")"),
    schedule("50,000 nested unary minuses", "angle", "0:(" + "-" * 50_000 + "t)"),
    schedule("5,000 nested parentheses", "angle", "0:(" + "(" * 5_000 + "t" + ")" * 5_000 + ")"),
    schedule("2,000 nested function calls", "angle", "0:(" + "sin(" * 2_000 + "t" + ")" * 2_000 + ")"),
    schedule("a huge exponent", "angle", "0:(10**400)"),
    schedule("a huger exponent", "angle", "0:(2**100000)"),
    schedule("a huge shift", "angle", "0:(1<<100000)"),
    schedule("a 100,000-digit number", "angle", "0:(" + "1" * 100_000 + ")"),
    schedule("a power tower of t", "angle", "0:(t**t**t**t)"),
    schedule("a frame key of 1e308", "zoom", "0:(1), 1e308:(2)"),
    schedule("__import__('os')", "angle", "0:(__import__('os').system('touch pwned'))"),
    schedule("attribute access to a dunder", "angle", "0:(t.__class__)"),
    schedule("lambda", "angle", "0:((lambda: 1)())"),
    schedule("comprehension", "angle", "0:(sum([t for t in range(9)]))"),
    schedule("string arithmetic", "angle", "0:('a'*10)"),
    schedule("keyword argument", "angle", "0:(sin(x=t))"),
    schedule("unknown name open", "angle", "0:(open)"),
    schedule("exec", "angle", "0:(exec('1'))"),
    schedule("subscript", "angle", "0:(t[0])"),
    schedule("conditional expression", "angle", "0:(1 if t else 2)"),
    schedule("a very long schedule", "zoom", ", ".join(f"{i}:(1.0{i % 10})" for i in range(100_000))),
]


def lines(*text: str) -> bytes:
    """The render's config as a file, its lines 7 on replaced by `text` (then the prompts), in UTF-8."""
    head = [f"{k}: {v}" for k, v in SMALL_CONFIG.items() if k != "animation_prompts"]
    assert len(head) == 6  # the bad line is line 7
    prompts = [f"  {k}: {v}" for k, v in SMALL_CONFIG["animation_prompts"].items()]
    return "\n".join([*head, *text, "animation_prompts:", *prompts, ""]).encode()


# Errors Snakemake reports before the workflow loads: the line names the file, and the line for YAML.
CONFIG_FILES = [
    Case("config file missing", None, CASE_CONFIG, ("No such file",)),
    Case("config file not UTF-8", lines('neg_prompts: "café"').decode().encode("latin-1"), CASE_CONFIG,
         ("line 7", "UTF-8")),
    Case("YAML: unclosed quote", lines('zoom: "0:(1.0)'), CASE_CONFIG, ("line 7",)),
    Case("YAML: unclosed bracket", lines("strength: [0.5"), CASE_CONFIG, ("line 7",)),
    Case("YAML: a colon in a plain value", lines("zoom: 0: (1.0)"), CASE_CONFIG, ("line 7",)),
    Case("YAML: bad indentation", lines("   zoom: 0:(1.0)"), CASE_CONFIG, ("line 7",)),
    Case("YAML: a tab", lines("\tzoom: 0:(1.0)"), CASE_CONFIG, ("line 7",)),
    Case("top level is a list", b"- model: builtin:tiny\n- W: 64\n", CASE_CONFIG, ("list",)),
    Case("empty config file", b"", CASE_CONFIG, ("empty",)),
]


@pytest.fixture(scope="module")
def finished_render(tmp_path_factory) -> Path:
    """A working directory holding one finished small render (config render.yaml) and Snakemake's records."""
    workdir = tmp_path_factory.mktemp("finished")
    write_config(workdir)
    run_snakemake(workdir, "--cores", "1", check=True)
    assert (workdir / OUT / "video.mp4").is_file()
    return workdir


def digests(workdir: Path) -> dict[str, str]:
    """sha256 of every file under workdir except Snakemake's records and the case's config."""
    return {str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(workdir.rglob("*"))
            if p.is_file() and p.parts[len(workdir.parts)] != ".snakemake" and p.name != CASE_CONFIG}


def write_case_config(workdir: Path, config: dict[str, Any] | bytes | None) -> None:
    if isinstance(config, dict):
        write_config(workdir, CASE_CONFIG, **config)
    elif config is not None:
        (workdir / CASE_CONFIG).write_bytes(config)


def problems_of(case: Case, workdir: Path) -> list[str]:
    """What is wrong with the run of `case` in workdir (a copy of the finished render): [] when all is right."""
    if case.setup:
        case.setup(workdir)
    before = digests(workdir)
    write_case_config(workdir, case.config)
    try:
        proc = run_snakemake(workdir, "--cores", "1", configfile=CASE_CONFIG, timeout=CASE_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        tail = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr or ""
        return [f"still running after {CASE_TIMEOUT} s (killed); stderr ended: {tail[-500:]!r}"]
    problems = []
    if proc.returncode != 1:
        problems.append(f"exit {proc.returncode}, not 1")
    if "Traceback" in proc.stdout + proc.stderr:
        problems.append("a traceback")
    error_lines = [line for line in proc.stderr.splitlines() if line.strip() and not NOT_ERROR_LINES.match(line)]
    if len(error_lines) != 1:
        problems.append(f"{len(error_lines)} lines on stderr besides the profile notice and warnings, not 1")
    line = last_line(proc)
    if not re.search(rf"(?<!\w){re.escape(case.key)}(?!\w)", line):
        problems.append(f"the last line does not name {case.key!r}")
    problems += [f"the last line lacks {text[:60]!r}" for text in case.expect if text not in line]
    after = digests(workdir)
    changed = sorted(p for p in before if before[p] != after.get(p))
    added = sorted(set(after) - set(before))
    if changed:
        problems.append(f"files changed or deleted: {', '.join(changed)}")
    if added:
        problems.append(f"files added: {', '.join(added)}")
    if problems:
        shown = "\n".join(f"      {text[:300]}" for text in proc.stderr.splitlines()[-6:])
        problems.append(f"stderr ended:\n{shown}")
    return problems


def run_cases(cases: list[Case], render: Path, tmp_path: Path) -> None:
    """Every case in its own copy of the render, two at a time; one assertion lists every failing case."""
    names = [case.name for case in cases]
    assert len(set(names)) == len(names), "case names must be unique"

    def run(numbered: tuple[int, Case]) -> str | None:
        number, case = numbered
        workdir = tmp_path / f"case{number:03d}"
        shutil.copytree(render, workdir, symlinks=True)
        problems = problems_of(case, workdir)
        if not problems:
            shutil.rmtree(workdir)  # a failing case's copy is kept to look into
            return None
        return f"{case.name} ({str(case.config)[:200]}) in {workdir}:\n    " + "\n    ".join(problems)

    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [f for f in pool.map(run, enumerate(cases)) if f]
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n\n" + "\n\n".join(failures)


def test_malformed_configs(finished_render, tmp_path):
    run_cases(MALFORMED, finished_render, tmp_path)


def test_hostile_expressions(finished_render, tmp_path):
    run_cases(HOSTILE, finished_render, tmp_path)


def test_config_files_snakemake_cannot_load(finished_render, tmp_path):
    run_cases(CONFIG_FILES, finished_render, tmp_path)


def test_read_only_output_folder(finished_render, tmp_path):
    """A changed schedule would re-render frames into a folder that may not be written: one line naming it."""
    workdir = tmp_path / "render"
    shutil.copytree(finished_render, workdir, symlinks=True)
    with read_only(workdir / OUT):
        problems = problems_of(bad("read-only output folder", {"zoom": "0:(1.02)"}, str(OUT)), workdir)
    assert not problems, "\n".join(problems)

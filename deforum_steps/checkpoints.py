"""What a single-file checkpoint is, read without torch and without loading its weights: the tensor names and
shapes from a `.safetensors` header or from a `.ckpt`'s pickle (read by a restricted unpickler that builds no
object but tensor references, so a malicious pickle runs nothing), and the one small tensor the v-prediction
check needs. Planning calls this for every run: a `.safetensors` header is a few KB; a `.ckpt` result is cached
by the file's size and modification time (model_files)."""
from __future__ import annotations

import json
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

UNET = "model.diffusion_model."
# The keys that tell the families apart (as in diffusers.loaders.single_file_utils.infer_diffusers_model_type).
UNET_INPUT = UNET + "input_blocks.0.0.weight"
SD1_TEXT = "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"
SD2_TEXT = "cond_stage_model.model.token_embedding.weight"
XL_TEXT_2 = "conditioner.embedders.1.model.positional_embedding"
XL_REFINER_TEXT = "conditioner.embedders.0.model.text_projection"
# SD 2.x v-prediction (768-v) vs epsilon (512-base): the spread of this LayerNorm bias (ComfyUI's test, measured
# on the released 2.0/2.1 files), unless a .ckpt records the 512-base training step (diffusers' test).
V_PREDICTION_BIAS = UNET + "output_blocks.11.1.transformer_blocks.0.norm1.bias"
V_PREDICTION_STD = 0.09
SD2_BASE_GLOBAL_STEP = 875000

SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": None, "I64": np.int64,
                      "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
STORAGE_DTYPES = {"DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
                  "BFloat16Storage": None, "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
                  "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


class CheckpointError(ValueError):
    """The file is not a checkpoint this program can read or use (the message is one line)."""


@dataclass(frozen=True)
class TensorRef:
    """Where a tensor's values are, without reading them."""

    shape: tuple[int, ...]
    dtype: str  # a SAFETENSORS_DTYPES / STORAGE_DTYPES key
    start: int  # element offset (.ckpt) or byte offset (.safetensors)
    storage: str = ""  # the .ckpt zip member holding the values


@dataclass(frozen=True)
class Index:
    tensors: dict[str, TensorRef]
    global_step: int | None = None


def read_index(path: Path) -> Index:
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        return _safetensors_index(path)
    return _ckpt_index(path)


def _safetensors_index(path: Path) -> Index:
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(f.read(size))
    except (OSError, struct.error, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable .safetensors file ({e})") from None
    header.pop("__metadata__", None)
    tensors = {name: TensorRef(tuple(t["shape"]), t["dtype"], 8 + size + t["data_offsets"][0])
               for name, t in header.items()}
    return Index(tensors)


class _StubUnpickler(pickle.Unpickler):
    """Reads torch.save's data.pkl into TensorRefs: only dicts, tensors and storages are allowed."""

    def __init__(self, file, prefix: str):
        super().__init__(file)
        self.prefix = prefix

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return self._tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda data, *_: data
        if module == "torch" and name in STORAGE_DTYPES:
            return name
        raise CheckpointError(f"holds pickled Python objects ({module}.{name}) that a safe load refuses; convert "
                              "it to .safetensors (or use a pruned checkpoint)")

    def persistent_load(self, pid):  # ("storage", storage type, key, location, numel)
        return (pid[1], f"{self.prefix}data/{pid[2]}")

    @staticmethod
    def _tensor(storage, offset, shape, *_):
        return TensorRef(tuple(shape), storage[0], int(offset), storage[1])


def _ckpt_index(path: Path) -> Index:
    try:
        with zipfile.ZipFile(path) as z:
            pkl = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
            if pkl is None:
                raise CheckpointError(f"{path} is not a torch checkpoint (no data.pkl)")
            with z.open(pkl) as f:
                data = _StubUnpickler(f, pkl[: -len("data.pkl")]).load()
    except zipfile.BadZipFile:
        raise CheckpointError(f"{path} is not a zip-format torch checkpoint (legacy or damaged file); convert it "
                              "to .safetensors") from None
    except CheckpointError as e:
        raise CheckpointError(f"{path} {e}" if str(e).startswith("holds") else str(e)) from None
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as e:
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({type(e).__name__})") from None
    step = data.get("global_step") if isinstance(data, dict) else None
    while isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds no state dict")
    tensors = {k: v for k, v in data.items() if isinstance(v, TensorRef)}
    return Index(tensors, step if isinstance(step, int) else None)


def read_tensor(path: Path, ref: TensorRef) -> np.ndarray:
    """One (small) tensor's values as float64."""
    n = int(np.prod(ref.shape)) if ref.shape else 1
    np_dtype = (SAFETENSORS_DTYPES if not ref.storage else STORAGE_DTYPES)[ref.dtype]
    itemsize = 2 if np_dtype is None else np.dtype(np_dtype).itemsize
    if ref.storage:
        with zipfile.ZipFile(path) as z, z.open(ref.storage) as f:
            raw = f.read()[ref.start * itemsize:(ref.start + n) * itemsize]
    else:
        with open(path, "rb") as f:
            f.seek(ref.start)
            raw = f.read(n * itemsize)
    if np_dtype is None:  # bfloat16: the upper half of a float32
        return (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return np.frombuffer(raw, np_dtype).astype(np.float64)


def describe(path: Path) -> dict:
    """{"family": family(path), "unet_channels": the UNet's first block width (320 in every SD release)}."""
    index = read_index(path)
    name = family(path, index)
    return {"family": name, "unet_channels": index.tensors[UNET_INPUT].shape[0]}


def family(path: Path, index: Index | None = None) -> str:
    """sd1, sd2, sd2-v or sdxl: which shipped config folder (model_configs/) the checkpoint's weights fit.
    CheckpointError for what is no text-to-image SD checkpoint (inpainting, pix2pix, the SDXL refiner, a LoRA,
    a lone VAE ...)."""
    index = index or read_index(path)
    t = index.tensors
    if UNET_INPUT not in t:
        raise CheckpointError(f"{path} has no Stable Diffusion UNet ({UNET}...): a LoRA, VAE, embedding or other "
                              "model, not a full checkpoint")
    channels = t[UNET_INPUT].shape[1]
    if channels != 4:
        kind = {9: "an inpainting", 8: "an instruct-pix2pix"}.get(channels, f"a {channels}-channel")
        raise CheckpointError(f"{path} is {kind} checkpoint; animation needs a text-to-image one (4 input "
                              "channels), e.g. v1-5-pruned-emaonly")
    if XL_TEXT_2 in t:
        return "sdxl"
    if XL_REFINER_TEXT in t:
        raise CheckpointError(f"{path} is the SDXL refiner, which is not supported; use an SDXL base checkpoint")
    if SD2_TEXT in t:
        if index.global_step == SD2_BASE_GLOBAL_STEP:
            return "sd2"
        bias = t.get(V_PREDICTION_BIAS)
        return "sd2-v" if bias is not None and read_tensor(path, bias).std() > V_PREDICTION_STD else "sd2"
    if SD1_TEXT in t:
        return "sd1"
    raise CheckpointError(f"{path} has a UNet but no text encoder of SD 1.x (cond_stage_model.transformer), "
                          "SD 2.x (cond_stage_model.model) or SDXL (conditioner.embedders)")

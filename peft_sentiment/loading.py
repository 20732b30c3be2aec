"""Loading a trained model back, in eval mode, from a run folder, a model or adapter folder, or the Hub.

Only safetensors weights are loaded, and a run's model is loaded the way it was trained: its own
base (the run's base/ folder when the run made one), the label names, 4 bits for a QLoRA run, and
`model.trust_remote_code` from the run's config.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from .config import QuantConfig, RunConfig, expand_path, looks_like_path, path_exists
from .labels import BINARY, LABELS_FILE, LabelSet, labels_of_folder
from .errors import ModelError, RunError, first_line
from .rundir import ADAPTER_DIR, BASE_DIR, CONFIG_FILE, MODEL_DIR, is_run, load_run_config, unfinished_message

WEIGHTS = {"model": "model.safetensors", "adapter": "adapter_model.safetensors"}
PICKLES = {"model": "pytorch_model.bin", "adapter": "adapter_model.bin"}
TOKENIZER_CONFIG = "tokenizer_config.json"


@dataclass
class LoadedModel:
    model: torch.nn.Module  # eval mode
    tokenizer: PreTrainedTokenizerBase
    kind: str  # "run", "model", "adapter" or "hub"
    config: RunConfig | None  # the run's config when loaded from a run folder
    source: str

    @property
    def trust_remote_code(self) -> bool:
        """Whether the model may run its repo's own code: only when the run was trained that way."""
        return self.config is not None and self.config.model.trust_remote_code


def load_model(source: str | Path) -> LoadedModel:
    """A run folder, a model folder, an adapter folder or a Hub id -> model in eval mode."""
    path = expand_path(str(source))
    message = unfinished_message(path)
    if message is not None:
        raise RunError(message)
    if path_exists(str(source), folder=True):
        if is_run(path):
            cfg = load_run_config(path)
            remote = cfg.model.trust_remote_code
            if (path / MODEL_DIR).is_dir():
                model, tok = _load_full(path / MODEL_DIR, remote)
            else:
                base = path / BASE_DIR if (path / BASE_DIR).is_dir() else None
                quant = cfg.quant if cfg.method == "qlora" else None  # the base as it was trained: 4-bit
                model, tok = load_adapter(path / ADAPTER_DIR, base, quant, remote)
            return LoadedModel(model.eval(), tok, "run", cfg, str(path))
        if (path / "adapter_config.json").is_file():
            # The adapter/ folder of a run whose base was built by the run: that base is its sibling.
            sibling = path.parent / BASE_DIR
            base = sibling if path.name == ADAPTER_DIR and sibling.is_dir() else None
            model, tok = load_adapter(path, base)
            return LoadedModel(model.eval(), tok, "adapter", None, str(path))
        if (path / "config.json").is_file():
            model, tok = _load_full(path)
            return LoadedModel(model.eval(), tok, "model", None, str(path))
        if (path / CONFIG_FILE).is_file():
            raise RunError(f"run {path} has no {MODEL_DIR}/ or {ADAPTER_DIR}/ folder: it did not finish")
        raise ModelError(f"{path} is neither a run, a model folder nor an adapter folder")
    if looks_like_path(str(source)):
        raise ModelError(f"folder not found: {source}")
    if _hub_has_file(str(source), "adapter_config.json"):
        model, tok = load_adapter(str(source), None)
        return LoadedModel(model.eval(), tok, "adapter", None, str(source))
    model, tok = _load_full(str(source))
    return LoadedModel(model.eval(), tok, "hub", None, str(source))


def _hub_has_file(repo_id: str, filename: str) -> bool:
    """True when the Hub repo holds `filename`; offline or unreachable, when its cached copy does."""
    from huggingface_hub import file_exists, try_to_load_from_cache

    try:
        return file_exists(repo_id, filename)
    except Exception:  # noqa: BLE001 - offline (file_exists does not read the cache), network, gated repo
        pass
    try:
        # A path when cached; None when unknown; a sentinel object when known to be missing.
        return isinstance(try_to_load_from_cache(repo_id, filename), str)
    except Exception:  # noqa: BLE001 - not a valid repo id
        return False


def check_weights(folder: Path, kind: str) -> None:
    """A local model or adapter folder holds readable safetensors weights, or one line names the file.

    Pickled weights (.bin) are never loaded: unpickling can run code.
    """
    weights = folder / WEIGHTS[kind]
    shards = sorted(folder.glob("model-*-of-*.safetensors")) if kind == "model" else []
    if not weights.is_file() and not shards:
        if (folder / PICKLES[kind]).is_file():
            raise ModelError(f"{folder / PICKLES[kind]} is a pickle file: only safetensors weights are "
                             f"loaded (convert it to {WEIGHTS[kind]})")
        raise ModelError(f"{weights} is missing")
    from safetensors import safe_open

    for file in shards or [weights]:
        try:
            with safe_open(str(file), "pt") as f:
                for key in f.keys():  # reads every tensor: a truncated file fails here
                    f.get_slice(key)[:1]
        except Exception as err:  # noqa: BLE001 - safetensors raises several types for a bad file
            raise ModelError(f"{file} is damaged or truncated ({first_line(err)})") from None


def _load_full(source: str | Path, trust_remote_code: bool = False) -> tuple[torch.nn.Module,
                                                                            PreTrainedTokenizerBase]:
    if isinstance(source, Path) or path_exists(str(source), folder=True):
        folder = expand_path(str(source))
        check_weights(folder, "model")
        if not any((folder / name).is_file() for name in TOKENIZER_FILES):
            # transformers would build a tokenizer of special tokens only, and every word would be [UNK].
            raise ModelError(f"{folder} has no tokenizer ({' or '.join(TOKENIZER_FILES)}): save the "
                             "tokenizer with the model")
    try:
        tok = AutoTokenizer.from_pretrained(str(source), trust_remote_code=trust_remote_code)
        model, info = AutoModelForSequenceClassification.from_pretrained(
            str(source), use_safetensors=True, trust_remote_code=trust_remote_code, output_loading_info=True)
    except Exception as err:  # noqa: BLE001
        raise ModelError(_message(source, err)) from None
    # A trained classifier holds every weight its config asks for: missing ones would be drawn at random.
    missing = [*info.get("missing_keys", ()), *(k[0] if isinstance(k, tuple) else k
                                                for k in info.get("mismatched_keys", ()))]
    if missing:
        raise ModelError(f"{source}: {len(missing)} weights its config.json asks for are missing or of "
                         f"another shape in its checkpoint (e.g. {sorted(missing)[0]}): the config does not "
                         "match the weights")
    return model, tok


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def base_source(adapter_dir: Path | str, base_dir: Path | None) -> str:
    """Where the adapter's base loads from: `base_dir` when given, else the base its config records.

    The adapter's config is read either way, so a missing or bad one is named before any base loads.
    """
    from peft import PeftConfig

    try:
        recorded = PeftConfig.from_pretrained(str(adapter_dir)).base_model_name_or_path
    except Exception as err:  # noqa: BLE001
        raise ModelError(_message(adapter_dir, err)) from None
    return str(base_dir) if base_dir is not None else recorded


def load_base(source: str, quant: QuantConfig | None = None, trust_remote_code: bool = False,
              labels: LabelSet | None = None) -> PreTrainedModel:
    """An adapter's base classifier, rebuilt with the adapter's classes (`labels`: its labels.json;
    the adapter's weights do not carry the names); `quant` loads it in 4 bits (a QLoRA run)."""
    from .modeling import label_kwargs

    labels = labels or BINARY
    try:
        extra: dict[str, Any] = {}
        if quant is not None:
            from .modeling import quantized_load_kwargs

            model_type = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code).model_type
            extra = quantized_load_kwargs(quant, model_type)
        base = AutoModelForSequenceClassification.from_pretrained(
            source, **label_kwargs(labels), use_safetensors=True,
            trust_remote_code=trust_remote_code, **extra,
        )
    except Exception as err:  # noqa: BLE001
        raise ModelError(_message(source, err)) from None
    if quant is not None:  # for inference: bitsandbytes' CPU repack fails on some shapes (modeling.py)
        from .modeling import keep_plain_layout_where_repack_fails

        keep_plain_layout_where_repack_fails(base)
    return base


def load_adapter(adapter_dir: Path | str, base_dir: Path | None, quant: QuantConfig | None = None,
                 trust_remote_code: bool = False) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """An adapter folder or Hub id on its base; `base_dir` replaces the base recorded in the adapter;
    `quant` loads the base in 4 bits (a QLoRA run)."""
    # Not peft's AutoPeftModelForSequenceClassification: it takes the base only from the path recorded
    # in adapter_config.json, with no way to replace it, and a run that made its own random base
    # records none (null: AutoPeft then asks the Hub for `None` and fails; tried with peft 0.21.2).
    # The 4-bit load also needs the base's model type before the base is loaded, and AutoPeft resizes
    # the embeddings to the tokenizer on its own. So: the base here, then PeftModel.from_pretrained.
    from peft import PeftModel

    if isinstance(adapter_dir, Path):
        check_weights(adapter_dir, "adapter")
    if base_dir is not None:
        check_weights(base_dir, "model")
    source = base_source(adapter_dir, base_dir)
    base = load_base(source, quant, trust_remote_code, adapter_labels(adapter_dir))
    try:
        model = PeftModel.from_pretrained(base, str(adapter_dir))
    except Exception as err:  # noqa: BLE001 - shapes or names from another base model
        raise ModelError(f"the adapter in {adapter_dir} does not fit the base {source}: "
                         f"{first_line(err)}") from None
    try:
        if isinstance(adapter_dir, Path):
            has_tokenizer = (adapter_dir / TOKENIZER_CONFIG).is_file()
        else:
            has_tokenizer = _hub_has_file(adapter_dir, TOKENIZER_CONFIG)
        tok_source = adapter_dir if has_tokenizer else source
        tok = AutoTokenizer.from_pretrained(str(tok_source), trust_remote_code=trust_remote_code)
    except Exception as err:  # noqa: BLE001
        raise ModelError(_message(source, err)) from None
    return model, tok


def adapter_labels(adapter_dir: Path | str) -> LabelSet:
    """The classes an adapter was trained for: its labels.json (a Hub adapter's, when the Hub or the
    cache has one), else the seed protocol's two."""
    if isinstance(adapter_dir, Path) or path_exists(str(adapter_dir), folder=True):
        return labels_of_folder(expand_path(str(adapter_dir)))
    if _hub_has_file(str(adapter_dir), LABELS_FILE):
        from huggingface_hub import hf_hub_download

        try:
            return labels_of_folder(Path(hf_hub_download(str(adapter_dir), LABELS_FILE)).parent)
        except Exception as err:  # noqa: BLE001 - network
            raise ModelError(_message(adapter_dir, err)) from None
    return BINARY


def weights_dir(run_dir: Path) -> Path:
    """A finished run's model/ (full fine-tuning, head) or adapter/ folder."""
    return run_dir / (MODEL_DIR if (run_dir / MODEL_DIR).is_dir() else ADAPTER_DIR)


def run_labels(run_dir: Path) -> LabelSet:
    """The classes of a finished run (the labels.json beside its weights)."""
    return labels_of_folder(weights_dir(run_dir))


def model_labels(loaded: "LoadedModel") -> LabelSet:
    """The classes of a loaded model: the labels.json saved with it, else its config's id2label."""
    folder = weights_dir(Path(loaded.source)) if loaded.kind == "run" else Path(loaded.source)
    config = getattr(loaded.model, "config", None)
    return labels_of_folder(folder if folder.is_dir() else None, getattr(config, "id2label", None))


def _message(source: str | Path, err: BaseException) -> str:
    if path_exists(str(source)):
        return f"cannot load {source}: {first_line(err)}"
    return f"cannot load {str(source)!r} from the Hub (no network or no such repo): pass a local folder"

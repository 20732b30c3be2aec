"""Publish a run on the Hugging Face Hub. The only module that writes to the network.

A push stages the exact folder to upload (merged model or adapter, tokenizer, model card; or an ONNX
export folder and its card), then sends it in one commit, so a failed push leaves no partial commit.
`--dry-run` keeps the staged folder and makes no Hub call at all.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from .card import (
    RANDOM_BASE,
    Kind,
    benchmark_rows,
    build_card,
    build_export_card,
    hub_id,
    is_int8,
    short_path,
)
from .config import METHOD_NAMES, RunConfig, looks_like_path, path_exists
from .errors import ConfigError, HubError, RunError, first_line
from .merge import MergeResult, check_mergeable, copy_tokenizer, write_merged
from .onnx_backend import CHECK_FILE, METADATA_FILE, is_export, read_metadata
from .rundir import ADAPTER_DIR, BASE_DIR, MODEL_DIR, atomic_dir, load_run_config, write_json

CARD_FILE = "README.md"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# A new repo's first commit holds .gitattributes: it is the Hub's, not content to protect or replace.
HUB_FILES = (".gitattributes",)


@dataclass(frozen=True)
class StagedFile:
    name: str  # path inside the repo
    size: int  # bytes


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    kind: Kind
    files: tuple[StagedFile, ...]
    folder: Path | None  # the dry-run folder (kept); None after an upload (its staging folder is gone)
    revision: str | None
    commit_url: str | None  # None for a dry run
    merge: MergeResult | None  # the logit check, when the run was merged
    check: dict[str, Any] | None = None  # an ONNX export's export_check.json


def hub_api(token: str | None = None) -> HfApi:
    """The Hub client for one push; tests replace this function with a fake."""
    from . import __version__

    return HfApi(token=token, library_name="peft-sentiment", library_version=__version__)


def check_repo_id(repo_id: str) -> None:
    """NAME/REPO, checked locally before anything is built or sent."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ConfigError(f"--repo-id {repo_id!r} is not a valid Hub repo id: {first_line(err)}") from None
    if repo_id.count("/") != 1:
        raise ConfigError(f"--repo-id {repo_id!r} must look like NAME/REPO: your user or organization "
                          "name, a slash, the repo name")


# Hub license ids: apache-2.0, mit, cc-by-nc-sa-4.0, openrail++, other, ...
_LICENSE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_-]*")


def check_license(license: str) -> None:
    """One license id for the model card's metadata, checked before anything is built."""
    if not _LICENSE_ID.fullmatch(license):
        raise ConfigError(f"--license {license!r} is not a license id: use one such as apache-2.0, mit or "
                          "other (https://huggingface.co/docs/hub/repositories-licenses)")


def hub_token() -> str:
    """The token of HF_TOKEN or of the cached login; never printed or written anywhere."""
    try:
        token = get_token()
    except Exception as err:  # noqa: BLE001 - OIDC exchange failures come in many types
        raise HubError(f"cannot get a Hugging Face token: {type(err).__name__}") from None
    if not token:
        raise HubError("no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    return token


def push_run(
    run_dir: str | Path,
    repo_id: str,
    kind: Kind,
    *,
    private: bool = False,
    revision: str | None = None,
    create_branch: bool = False,
    commit_message: str | None = None,
    dry_run: bool = False,
    overwrite: bool = False,
    base_model_id: str | None = None,
    license: str = "apache-2.0",
    benchmark: Path | None = None,
    staging_dir: Path | None = None,
    api: HfApi | None = None,
) -> PushResult:
    """Stage the run's merged model or adapter (or, `kind` onnx, the export folder `run_dir`) with a
    model card, and upload it in one commit."""
    run_dir = Path(run_dir)
    check_repo_id(repo_id)
    check_license(license)
    if staging_dir is not None and not dry_run:
        raise ConfigError("--staging-dir only applies with --dry-run (a push stages in a temporary folder)")
    if kind == "onnx":
        meta = check_export(run_dir)
        cfg, base, method = None, resolve_export_base(run_dir, meta, base_model_id), str(meta.get("method", ""))
        words, origin = f"ONNX export ({meta.get('quantization') if is_int8(meta) else 'fp32'})", "export"
    else:
        if is_export(run_dir):
            raise ConfigError(f"{run_dir} is an ONNX export, not a run: push it with --format onnx")
        cfg = load_run_config(run_dir)
        base, method = resolve_base(run_dir, cfg, kind, base_model_id), cfg.method
        words, origin = _kind_words(cfg, kind), "run"
    if benchmark is not None:
        benchmark_rows(benchmark, method)  # a bad file fails now, not after the merge
    card = {"repo_id": repo_id, "base_model_id": base, "license": license, "benchmark": benchmark}

    if dry_run:
        folder = Path(staging_dir) if staging_dir is not None else run_dir / f"push-dry-run-{kind}"
        if folder.exists() and not overwrite:
            raise RunError(f"dry-run folder {folder} already exists: pass --overwrite or choose "
                           "another --staging-dir")
        with atomic_dir(folder, overwrite=True) as tmp:
            merge, check = _stage_kind(run_dir, cfg, kind, tmp, card)
        return PushResult(repo_id=repo_id, kind=kind, files=list_files(folder), folder=folder,
                          revision=revision, commit_url=None, merge=merge, check=check)

    token = hub_token()
    api = api if api is not None else hub_api(token)
    message = commit_message or f"Upload {words} from peft-sentiment {origin} {run_dir.resolve().name}"
    with tempfile.TemporaryDirectory(prefix="peft-sentiment-push-") as tmp:
        merge, check = _stage_kind(run_dir, cfg, kind, Path(tmp), card)
        files = list_files(Path(tmp))
        url = upload(Path(tmp), repo_id, api, private=private, revision=revision,
                     create_branch=create_branch, commit_message=message, overwrite=overwrite, token=token)
    return PushResult(repo_id=repo_id, kind=kind, files=files, folder=None, revision=revision,
                      commit_url=url, merge=merge, check=check)


def _stage_kind(source: Path, cfg: RunConfig | None, kind: Kind, folder: Path,
                card: dict[str, Any]) -> tuple[MergeResult | None, dict[str, Any] | None]:
    """(merge check, export check) of what was staged: a run's model, or an export."""
    if kind == "onnx":
        return None, stage_export(source, folder, **card)
    assert cfg is not None
    return stage(source, cfg, kind, folder, **card), None


def resolve_base(run_dir: Path, cfg: RunConfig, kind: Kind, base_model_id: str | None) -> str | None:
    """The base model's Hub id for the card and adapter config; None when it is no Hub model."""
    if base_model_id is not None and hub_id(base_model_id) is None:
        raise ConfigError(f"--base-model-id {base_model_id!r} must be a Hub model id, not a local path")
    given = hub_id(base_model_id) if base_model_id is not None else None
    if kind == "merged":
        if cfg.saves_adapter:
            check_mergeable(run_dir)
        elif not (run_dir / MODEL_DIR).is_dir():
            raise RunError(f"run {run_dir} has no {MODEL_DIR}/ folder: it did not finish")
        if cfg.model.builds_new_weights:
            if given is not None:
                raise ConfigError(f"--base-model-id: run {run_dir} started from random weights, "
                                  "not from a Hub model")
            return None
        return given or hub_id(cfg.model.name)
    if not cfg.saves_adapter:
        raise RunError(f"run {run_dir} was trained with method {cfg.method}: it has no adapter; push it "
                       "with --merged")
    if not (run_dir / ADAPTER_DIR).is_dir():
        raise RunError(f"run {run_dir} has no {ADAPTER_DIR}/ folder: it did not finish")
    if cfg.model.builds_new_weights:
        raise RunError(f"run {run_dir} has a base with random weights that exists only in "
                       f"{run_dir / BASE_DIR}, so its adapter cannot be used alone: push the "
                       "standalone model with --merged")
    if given is not None:
        return given
    found = hub_id(cfg.model.name)
    if found is None:
        raise ConfigError(f"run {run_dir} was trained from the local folder {cfg.model.name}: pass "
                          "--base-model-id with the Hub id of the same weights")
    return found


def stage(run_dir: Path, cfg: RunConfig, kind: Kind, folder: Path, repo_id: str,
          base_model_id: str | None, license: str = "apache-2.0",
          benchmark: Path | None = None) -> MergeResult | None:
    """Write into the empty `folder` exactly what the push uploads; the merge check when merged."""
    merge = None
    if kind == "adapter":
        _stage_adapter(run_dir / ADAPTER_DIR, folder, base_model_id, cfg.data.max_length)
    elif not cfg.saves_adapter:
        _stage_full(run_dir / MODEL_DIR, folder, cfg.data.max_length)
    else:
        merge = write_merged(run_dir, folder, record_paths=False)
    card = build_card(run_dir, kind, repo_id, base_model_id, license, benchmark, merge)
    (folder / CARD_FILE).write_text(card)
    return merge


def _stage_adapter(adapter_dir: Path, folder: Path, base_model_id: str | None, max_length: int) -> None:
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (adapter_dir / name).is_file():
            raise RunError(f"{adapter_dir} has no {name}: the run did not finish")
    shutil.copyfile(adapter_dir / ADAPTER_WEIGHTS, folder / ADAPTER_WEIGHTS)  # LoRA weights and the head
    config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text())
    config["base_model_name_or_path"] = base_model_id  # a Hub id: a local path is useless to others
    write_json(config, folder / ADAPTER_CONFIG)
    copy_tokenizer(adapter_dir, folder, max_length)


def _stage_full(model_dir: Path, folder: Path, max_length: int) -> None:
    """A full fine-tune is already standalone: its config and weights, as saved."""
    for src in model_dir.iterdir():
        if src.is_file() and (src.name == "config.json" or src.suffix == ".safetensors"
                              or src.name.endswith(".safetensors.index.json")):
            shutil.copyfile(src, folder / src.name)
    copy_tokenizer(model_dir, folder, max_length)


# ---------------------------------------------------------------- ONNX exports


def check_export(folder: Path) -> dict[str, Any]:
    """export.json of the ONNX export `folder`, which must hold what the card and a user need."""
    if not folder.is_dir():
        raise RunError(f"export folder not found: {folder}")
    if not is_export(folder):
        raise RunError(f"{folder} is not an ONNX export (it has no {METADATA_FILE}): make one with "
                       "`peft-sentiment export RUN --format onnx -o DIR` and push DIR")
    meta = read_metadata(folder)  # a wrong format or a missing model file: one line
    for name in (CHECK_FILE, "config.json", "tokenizer_config.json"):
        if not (folder / name).is_file():
            raise RunError(f"{folder} has no {name}: export the run again")
    return meta


def resolve_export_base(folder: Path, meta: dict[str, Any], base_model_id: str | None) -> str | None:
    """The card's base model for an export: --base-model-id, else export.json's base when it is a Hub id."""
    recorded = str(meta.get("base_model", ""))
    if base_model_id is None:
        return None if recorded.endswith(RANDOM_BASE) else hub_id(recorded)
    if hub_id(base_model_id) is None:
        raise ConfigError(f"--base-model-id {base_model_id!r} must be a Hub model id, not a local path")
    if recorded.endswith(RANDOM_BASE):
        raise ConfigError(f"--base-model-id: export {folder} was made from random weights, not from a Hub model")
    return hub_id(base_model_id)


def stage_export(export_dir: Path, folder: Path, repo_id: str, base_model_id: str | None,
                 license: str = "apache-2.0", benchmark: Path | None = None) -> dict[str, Any]:
    """Write into the empty `folder` the export's files, its two JSON records without local paths, and
    the card; returns the export check. Folders inside the export (a dry run's) are not copied."""
    for src in sorted(export_dir.iterdir()):
        if src.is_file() and not src.name.startswith(".") and src.name not in (CARD_FILE, METADATA_FILE,
                                                                                 CHECK_FILE):
            shutil.copyfile(src, folder / src.name)
    meta = json.loads((export_dir / METADATA_FILE).read_text())
    check = json.loads((export_dir / CHECK_FILE).read_text())
    write_json(public_metadata(meta), folder / METADATA_FILE)
    write_json(public_check(check), folder / CHECK_FILE)
    card = build_export_card(folder, repo_id, base_model_id, license, benchmark)
    (folder / CARD_FILE).write_text(card)
    return check


def public_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """export.json for others: the source run by its folder name, local base and data folders by
    their last two parts (not the user's folders above them)."""
    out = json.loads(json.dumps(meta))
    if out.get("source_run"):
        out["source_run"] = Path(str(out["source_run"])).name
    base = str(out.get("base_model", ""))
    random = base.endswith(RANDOM_BASE)
    name = base[:-len(RANDOM_BASE)] if random else base
    out["base_model"] = _public_path(name) + (RANDOM_BASE if random else "")
    if isinstance(out.get("data"), dict) and isinstance(out["data"].get("source"), str):
        out["data"]["source"] = _public_path(out["data"]["source"])
    return out


def public_check(check: dict[str, Any]) -> dict[str, Any]:
    """export_check.json for others: the folder its check texts came from by its last two parts."""
    out = json.loads(json.dumps(check))
    for record in (out, out.get("merge") or {}):
        if isinstance(record.get("texts"), str):
            record["texts"] = _public_phrase(record["texts"])
    return out


def _public_path(name: str) -> str:
    return short_path(name) if name and (looks_like_path(name) or path_exists(name)) else name


def _public_phrase(text: str) -> str:
    """"... of SOURCE" (how export.py and merge.py name check texts) with a local SOURCE shortened."""
    head, sep, tail = text.rpartition(" of ")
    return f"{head}{sep}{_public_path(tail)}" if sep else text


def list_files(folder: Path) -> tuple[StagedFile, ...]:
    return tuple(StagedFile(p.relative_to(folder).as_posix(), p.stat().st_size)
                 for p in sorted(folder.rglob("*")) if p.is_file())


def upload(
    folder: Path,
    repo_id: str,
    api: HfApi,
    *,
    private: bool = False,
    revision: str | None = None,
    create_branch: bool = False,
    commit_message: str,
    overwrite: bool = False,
    token: str | None = None,
) -> str:
    """Every file of `folder` in one commit; a repo (or branch) that holds files needs `overwrite`."""
    branch = None if revision in (None, "main") else revision
    with _hub_errors(repo_id, branch, token):
        existing, repo_exists, branch_exists = _remote_state(api, repo_id, branch, create_branch)
        ours = sorted(f for f in existing if f not in HUB_FILES)
        if ours and not overwrite:
            shown = ", ".join(ours[:5]) + (f" and {len(ours) - 5} more" if len(ours) > 5 else "")
            where = f"{repo_id}@{branch}" if branch else repo_id
            raise HubError(f"{where} already holds {shown}: pass --overwrite to replace its files")
        if private and repo_exists and not api.repo_info(repo_id, repo_type="model").private:
            raise HubError(f"{repo_id} exists and is public: --private cannot make it private; "
                           "change its visibility on the Hub or choose another --repo-id")
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if branch is not None and not branch_exists:
            api.create_branch(repo_id, branch=branch, exist_ok=True, repo_type="model")
        # One commit: it lands whole or not at all. With --overwrite it also deletes the files it
        # does not replace (.gitattributes excepted), so an old adapter_config.json cannot make a
        # merged model load as an adapter.
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                                 revision=branch, commit_message=commit_message,
                                 delete_patterns="*" if ours else None)
    return getattr(info, "commit_url", None) or f"https://huggingface.co/{repo_id}"


def _remote_state(api: HfApi, repo_id: str, branch: str | None,
                  create_branch: bool) -> tuple[list[str], bool, bool]:
    """(files at the revision, whether the repo exists, whether the branch exists)."""
    try:
        return list(api.list_repo_files(repo_id, revision=branch, repo_type="model")), True, True
    except RevisionNotFoundError:
        if not create_branch:
            raise
        # The new branch starts from main: its files are main's.
        return list(api.list_repo_files(repo_id, repo_type="model")), True, False
    except RepositoryNotFoundError:
        if branch is not None and not create_branch:
            raise HubError(f"revision {branch!r} not found: {repo_id} does not exist yet; pass "
                           "--create-branch to create the repo and the branch") from None
        return [], False, branch is None


@contextmanager
def _hub_errors(repo_id: str, branch: str | None, token: str | None) -> Iterator[None]:
    """Hub and network failures as one-line `HubError`s that never show the token."""
    try:
        yield
    except RevisionNotFoundError:
        raise HubError(f"revision {branch!r} not found in {repo_id}: pass --create-branch to "
                       "create it") from None
    except HfHubHTTPError as err:
        status = err.response.status_code if getattr(err, "response", None) is not None else "?"
        raise HubError(_scrub(f"the Hub refused a request for {repo_id} (HTTP {status}): "
                              f"{first_line(err)}; nothing was committed", token)) from None
    except OfflineModeIsEnabled:
        raise HubError("cannot reach the Hub: HF_HUB_OFFLINE is set; unset it to push "
                       "(nothing was committed)") from None
    except (OSError, *_http_errors()) as err:
        raise HubError(_scrub(f"cannot reach the Hub to push {repo_id} ({type(err).__name__}: "
                              f"{first_line(err)}): check the network and retry; nothing was "
                              "committed", token)) from None


def _http_errors() -> tuple[type[BaseException], ...]:
    """Connection errors of the HTTP client huggingface_hub uses (httpx2 now; httpx or requests before)."""
    found = []
    for module, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _kind_words(cfg: RunConfig, kind: Kind) -> str:
    if kind == "adapter":
        return f"{METHOD_NAMES[cfg.method]} adapter"
    return "merged model" if cfg.saves_adapter else "model"


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text

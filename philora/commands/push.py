"""``philora push RUN --repo USER/NAME``: upload the PEFT adapter (or the merged model) with a model card."""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from philora.commands.common import CommandError, fail, user_errors

DEFAULT_ENDPOINT = "https://huggingface.co"
CONNECT_TIMEOUT_S = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``philora push``."""
    parser.add_argument("run_dir", help="a run directory (the --output-dir of philora train)")
    parser.add_argument("--repo", required=True, help="hub repository USER/NAME (created if missing)")
    parser.add_argument("--merged", action="store_true", help="upload the merged model instead of the adapter")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument(
        "--dtype", default="auto", choices=("auto", "fp32", "bf16", "fp16"), help="stored dtype of a --merged upload"
    )
    parser.add_argument("--license", default="mit", help="license in the model card (the Phi models are MIT)")
    parser.add_argument("--message", default="Upload with philora push", help="commit message")


def run(args: argparse.Namespace) -> int:
    """Build the upload folder and push it; returns the exit code."""
    try:
        return _push(args)
    except user_errors() as err:
        return fail(str(err))


def endpoint() -> str:
    """The hub endpoint: HF_ENDPOINT, else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def check_reachable(url: str) -> None:
    """Fail fast, in one line, when the endpoint's host does not answer (huggingface_hub would retry for long)."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        raise CommandError(
            f"cannot reach the hub at {url} ({err.__class__.__name__}: {err}); check the network, or set HF_ENDPOINT"
        ) from None


def _check_repo_id(repo: str) -> None:
    parts = repo.split("/")
    if len(parts) != 2 or not all(parts) or any(c.isspace() for c in repo):
        raise CommandError(f"--repo {repo!r}: expected USER/NAME, e.g. alice/phi-2-roleplay-lora")


def _build_folder(args, run, folder: Path) -> None:
    import phi_models
    from philora.model_card import render_card
    from philora.runs import load_for_inference

    if args.merged:
        loaded = load_for_inference(run.path, device="cpu")
        dtype = None if args.dtype == "auto" else args.dtype
        phi_models.export_merged(
            loaded.model,
            folder,
            dtype,
            base_model=run.base_model,
            revision=run.revision,
            stop_token_ids=list(loaded.tokenizer.stop_token_ids),
            extra_info={"template": loaded.template},
        )
    elif run.peft_dir is not None:
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            (folder / name).write_bytes((run.peft_dir / name).read_bytes())
    else:  # a run from before peft/ existed: export it now
        loaded = load_for_inference(run.path, device="cpu")
        base = run.base_model_repo or run.base_model
        phi_models.export_peft_adapter(loaded.model, folder, base_model_name_or_path=base, revision=run.revision)
    card = render_card(run, args.repo, merged=args.merged, license_name=args.license)
    (folder / "README.md").write_text(card, encoding="utf-8")


def _push(args) -> int:
    from philora.runs import open_run

    _check_repo_id(args.repo)
    run = open_run(args.run_dir)
    url = endpoint()
    check_reachable(url)
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(endpoint=url, token=os.environ.get("HF_TOKEN") or None)
    with tempfile.TemporaryDirectory(prefix="philora-push-") as tmp:
        folder = Path(tmp)
        _build_folder(args, run, folder)
        try:
            api.create_repo(args.repo, private=args.private, exist_ok=True, repo_type="model")
            info = api.upload_folder(
                folder_path=str(folder), repo_id=args.repo, repo_type="model", commit_message=args.message
            )
        except HfHubHTTPError as err:
            status = getattr(getattr(err, "response", None), "status_code", None)
            hint = " (set HF_TOKEN to a token with write access)" if status in (401, 403) else ""
            raise CommandError(f"upload to {url}/{args.repo} failed: {str(err).splitlines()[0]}{hint}") from None
        except OSError as err:  # connection dropped mid-upload
            raise CommandError(f"upload to {url}/{args.repo} failed: {err}") from None
    print(
        f"pushed {'merged model' if args.merged else 'PEFT adapter'} to {url}/{args.repo}: "
        f"{getattr(info, 'commit_url', info)}"
    )
    return 0

"""The README.md (model card) uploaded with an adapter or merged model: YAML front matter plus usage."""

from __future__ import annotations

import yaml

from philora.runs import RunInfo

# Named data sources -> their hub dataset ids (bundled samples and local files have none).
_DATASETS = {
    "roleplay": "hieunguyenminh/roleplay",
    "tweetsumm": "Salesforce/dialogstudio",
    "oasst1": "OpenAssistant/oasst1",
}
_HYPERPARAMETERS = (
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lr",
    "schedule",
    "warmup",
    "epochs",
    "max_steps",
    "batch_size",
    "grad_accum",
    "max_seq_len",
    "packing",
    "optimizer",
    "weight_decay",
    "precision",
    "quantize",
    "seed",
)


def front_matter(run: RunInfo, *, merged: bool, license_name: str) -> dict:
    """The YAML metadata the hub reads (base_model, library_name, datasets, tags, license)."""
    base = run.base_model_repo or run.base_model
    meta = {
        "base_model": base,
        "library_name": "transformers" if merged else "peft",
        "license": license_name,
        "pipeline_tag": "text-generation",
        "tags": ["philora", "lora", "phi"] + (["merged"] if merged else ["peft"]) + (["qlora"] if run.quantize else []),
    }
    dataset = _DATASETS.get(str(run.config.get("data")))
    if dataset:
        meta["datasets"] = [dataset]
    return meta


def render_card(run: RunInfo, repo_id: str, *, merged: bool, license_name: str = "mit") -> str:
    """README.md text for ``repo_id``: front matter, what was trained, results, and how to load it."""
    meta = front_matter(run, merged=merged, license_name=license_name)
    base = meta["base_model"]
    values = dict(run.config, precision=run.resolved.get("precision", run.config.get("precision")))
    rows = [f"| {name} | {values.get(name)} |" for name in _HYPERPARAMETERS if name in values]
    rows.append(f"| targets | {', '.join(run.targets) or run.config.get('targets')} |")
    rows.append(f"| template | {run.template} |")
    final = run.final_eval
    results = (
        f"Final evaluation loss **{final['loss']:.4f}**, perplexity **{final['ppl']:.2f}** (step {final['step']})."
        if final
        else "The run recorded no evaluation (no validation split)."
    )
    if merged:
        usage = (
            f"```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
            f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")\n```\n'
        )
    else:
        usage = (
            f"```python\nfrom transformers import AutoModelForCausalLM\nfrom peft import PeftModel\n"
            f'base = AutoModelForCausalLM.from_pretrained("{base}")\n'
            f'model = PeftModel.from_pretrained(base, "{repo_id}")\n```\n'
        )
    call = '"<downloaded dir>"' if merged else f'"{base}", adapter="<downloaded dir>"'
    philora_usage = f"```python\nimport philora.runs\nloaded = philora.runs.load_for_inference({call})\n```\n"
    text = "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n\n"
    text += f"# {repo_id.split('/')[-1]}\n\n"
    text += (
        f"{'A merged model' if merged else 'A LoRA adapter'} for [{base}](https://huggingface.co/{base}), "
        f"fine-tuned with philora on `{run.config.get('data')}`"
        f"{' with a 4-bit ' + run.quantize + ' base (QLoRA)' if run.quantize else ''}.\n\n"
    )
    text += "## Training\n\n| setting | value |\n|---|---|\n" + "\n".join(rows) + "\n\n"
    text += f"## Results\n\n{results}\n\n"
    text += f"## Use with transformers{'' if merged else ' + peft'}\n\n{usage}\n"
    text += f"## Use with philora\n\n{philora_usage}"
    stops = run.resolved.get("stop_tokens")
    if stops:
        text += f"\nStop generation at: {', '.join(f'`{s}`' for s in stops)}.\n"
    return text


def parse_front_matter(text: str) -> dict:
    """The YAML front matter of a card (used by tests and ``philora push`` to check what it wrote)."""
    if not text.startswith("---\n"):
        raise ValueError("the card does not start with YAML front matter")
    block = text[4:].split("\n---\n", 1)[0]
    data = yaml.safe_load(block)
    if not isinstance(data, dict):
        raise ValueError("the front matter is not a mapping")
    return data

"""deploy: run a philora fine-tune elsewhere (llama.cpp and Ollama through GGUF, vLLM), and check beforehand
what each target would refuse. GGUF files are written with the ``gguf`` package (the optional extra ``gguf``)."""

from philora.deploy.errors import DeployError

__all__ = ["DeployError"]

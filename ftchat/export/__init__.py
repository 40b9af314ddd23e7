"""A finished run as files other tools load: a merged model, GGUF, an Ollama folder or the adapter (forms), each with
a model card (modelcard); gguf writes the GGUF files that export and the chat's llama.cpp backend read."""

"""The model: the SiameseUniNLU network, strict checkpoint loading, the tokenizer and the task
semantics (schema, prompts, windows, spans). Imports no web, metrics or deployment library."""

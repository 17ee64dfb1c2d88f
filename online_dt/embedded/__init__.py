"""The embedded default base model: synthetic corpus, tokenizer and tiny GPT-2, built on CPU."""

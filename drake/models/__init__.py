"""Models: the tiny LLaVA-style zoo, its tokenizer, one loader for zoo names / folders / hub ids, scoring."""

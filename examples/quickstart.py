import pear_lens as pl

model = pl.load_model("smollm2-135m-instruct")               # offline: GGUF from PyPI → HF → TransformerBridge
scores = pl.score_heads(model, pl.ProxyTask(), method="path")  # Δπ of every head, reference recipe
print(scores.to_dataframe().head())                           # layer, head, score, rank, settings
scores.heatmap().write_html("heatmap.html")                   # plotly; top-K heads marked

result = pl.train_coefficients(model, scores.top_k(10), pl.TrainConfig())  # one τ per head, model frozen
hf = pl.fold_into_hf(model.fresh_hf(), result.coefficients())              # τ folded into o_proj, in place
hf.save_pretrained("smollm2-pear")                            # a plain transformers model, same speed

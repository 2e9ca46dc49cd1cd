import pear_lens as pl

model = pl.load_model("smollm2-135m-instruct")               # offline: GGUF from PyPI → HF → TransformerBridge
scores = pl.score_heads(model, pl.ProxyTask(), method="path")  # Δπ of every head, reference recipe
print(scores.to_dataframe(ci=True).head())                    # layer, head, score, rank, 95% CI, FDR q-value
scores.heatmap(mark_significant=True).write_html("heatmap.html")  # plotly; top-K marked, dots: CI excludes 0

result = pl.train_coefficients(model, scores, pl.Recipe(), k=10)  # one τ per top-10 head, model frozen
hf = pl.fold_into_hf(model.fresh_hf(), result)                         # τ folded into o_proj, in place
hf.save_pretrained("smollm2-pear")                            # a plain transformers model, same speed

# your own task and metric: prompts, one-token answers and foils, corrupted prompts of the same length
task = pl.PromptTask(["When Mary and John went to the shop, John gave a bag to",
                      "When Anna and Tom went to the park, Tom gave a ball to"],
                     answers=[" Mary", " Anna"], foils=[" John", " Tom"],
                     corrupted=["When Mary and John went to the shop, Paul gave a bag to",
                                "When Anna and Tom went to the park, Paul gave a ball to"])
ioi = pl.score_heads(model, task, "logit_diff", method="path", ablation="corrupted")
ioi.caterpillar(top=15).write_html("caterpillar.html")         # top heads with their bootstrap intervals

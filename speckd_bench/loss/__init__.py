"""The training objective: per-token divergences, SpecKD's acceptance gate, the loss sums of a micro-batch
and the chunked output head that computes them without materialising the full logits."""

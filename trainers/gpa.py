"""Gaussian-weighted prompt aggregation (GPA, PromptSRC): deploy Σ_e w_e θ_e over the training epochs.

θ_e is the learner's parameters after the last optimizer step of epoch e (e = 1..N) and w_e the N(GPA_MEAN, GPA_STD)
density at e normalised over the N epochs, as the PromptSRC release computes it. Unlike the release (which sums deep
copies of the whole model state dict in each tensor's storage dtype, so the frozen fp16 CLIP weights pick up rounding
noise, and keeps the sum only in memory), the running sum covers the trainable tensors only, in fp32, and travels
with every checkpoint (:meth:`GaussianPromptAggregation.state_dict`), so a resumed run aggregates exactly like an
uninterrupted one.
"""
import torch


def gpa_weights(mean, std, epochs):
    """w_e, e = 1..``epochs`` (1-based): the N(mean, std) pdf at e divided by its sum over the epochs -> [epochs] fp64.

    Computed as a softmax of -(e - mean)^2 / (2 std^2): the same values as normalising the pdf, without 0/0 when every
    density underflows (a mean far outside 1..epochs or a tiny std).
    """
    if not std > 0:
        raise ValueError(f"TRAINER.PROMPTSRC.GPA_STD = {std}: the Gaussian's standard deviation must be > 0 "
                         f"(e.g. 1, as published).")
    if epochs < 1:
        raise ValueError(f"GPA needs at least one epoch, got OPTIM.MAX_EPOCH = {epochs}.")
    epoch = torch.arange(1, epochs + 1, dtype=torch.float64)
    return torch.softmax(-((epoch - mean) ** 2) / (2.0 * std ** 2), dim=0)


class GaussianPromptAggregation:
    """Running fp32 sum Σ_e w_e θ_e of a module's parameters, added to once per finished epoch."""

    def __init__(self, weights):
        self.weights = weights  # [N] fp64, w_e at index e - 1
        self.total = {}  # parameter name -> fp32 running sum
        self.epochs = []  # the 1-based epochs added so far, in order

    def add(self, epoch, module):
        """Add w_epoch · θ to the sum (θ = ``module``'s parameters now); epochs must come in order 1, 2, …"""
        expected = len(self.epochs) + 1
        if epoch != expected:
            raise RuntimeError(f"GPA expected epoch {expected} next, got epoch {epoch}")
        weight = float(self.weights[epoch - 1])
        with torch.no_grad():
            for name, param in module.named_parameters():
                term = param.detach().float() * weight
                self.total[name] = term if name not in self.total else self.total[name] + term
        self.epochs.append(epoch)

    @property
    def accumulated_weight(self):
        """Σ w_e over the epochs added so far (1 once every epoch has been added)."""
        return float(self.weights[: len(self.epochs)].sum())

    def load_into(self, module, renormalise=False):
        """Copy the aggregate into ``module``'s parameters; ``renormalise`` divides by the weight accumulated so far
        (a run that stopped before the last epoch deploys the weighted mean of the epochs it trained)."""
        if not self.epochs:
            raise RuntimeError("GPA has no epoch to aggregate yet")
        scale = 1.0 / self.accumulated_weight if renormalise else 1.0
        with torch.no_grad():
            for name, param in module.named_parameters():
                total = self.total[name] if scale == 1.0 else self.total[name] * scale
                param.copy_(total)

    def state_dict(self):
        """Plain tensors and ints (saved with each checkpoint's run state)."""
        return {"epochs": list(self.epochs), "total": {k: v.clone() for k, v in self.total.items()}}

    def load_state_dict(self, state, device):
        self.epochs = [int(e) for e in state["epochs"]]
        self.total = {k: v.to(device=device, dtype=torch.float32) for k, v in state["total"].items()}

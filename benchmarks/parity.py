"""Fast path in half precision against the fp32 straightforward path: logits and gradients, same weights and inputs.

For one trainer, the reference is its fp32 build evaluated on the straightforward path (the released code's
computation). Each precision P in fp16 / amp / bf16 runs the FAST path on the same learner weights, the same frozen
weights (rounded to fp16 where PREC fp16 stores them so) and the same batch; it is compared with

* the fp32 straightforward path (does the fast path in P compute what the released code computes?), and
* the fp32 fast path (what P itself costs),

and fp32 fast is compared with fp32 straightforward at the fp32 tolerance (the fast path's algebra on this device).

Errors (what :func:`compare` returns):

* logits: ``max |logits - logits_ref| / logit_scale``. Logits are ``logit_scale * cos(image, text)``, so this is the
  largest error of a cosine similarity, whatever the scale (random backbones 1/0.07, trained CLIP 100).
* gradients, two figures: ``grads_err``, the relative error of the whole gradient (every trainable tensor
  concatenated), ``||G - G_ref|| / ||G_ref||``; and ``family_err``, the worst parameter family (the same tensor at
  every layer, e.g. ``vision_gates.*.bias``), ``||g - g_ref|| / max(||g_ref||, share)`` over the family's tensors,
  where ``share`` is the family's equal share of the whole gradient, ``||G_ref|| * sqrt(its entries / all
  entries)`` (a family far below its share is a sum that nearly cancels, such as one layer's gate bias; its relative
  error measures the cancellation, so it is judged against its share: a mixed absolute / relative tolerance).

Which figures are judged: in fp32 both (rounding noise is far below any difference in algebra, even for
ill-conditioned families); in half precision the whole gradient only. Some families are projections of a
well-conditioned gradient onto a few directions (CoCoOp's meta-net bias: the context gradient through a 512 -> 32
map), which multiplies their relative rounding error by about sqrt(width); in half precision that puts their
rounding noise at the tolerance (once in 60 draws on the CPU), so their error is reported, not judged.

Tolerances (:func:`tolerances`) are ``K * u`` with ``u`` the unit roundoff of the compute dtype (fp32 2^-24,
fp16 2^-11, bf16 2^-8) and K from the model's depth (and, in fp32, width); derivation in docs/BENCHMARK.md.

Where no GPU is present, :class:`EmulatedPrecision` (through :func:`precision_for`) applies the GPU policy of fp16 /
amp on the CPU (fp16 frozen weights, or fp16 autocast, on CPU kernels), so the half-precision code paths run in the
normal tests.
"""
import contextlib
import copy
import math
import random
import warnings

import torch

from clip_patch import Precision

HALF_PRECISIONS = ("fp16", "amp", "bf16")
INITIAL_LOSS_SCALE = 2.0 ** 16  # torch.amp.GradScaler's initial scale


def tolerances(precision, layers, width):
    """``{"logits": K_l * u, "grads": K_g * u}`` for a model of ``layers`` blocks per encoder and ``width``.

    Probabilistic rounding-error analysis (an error of sqrt(N) * u after N independent roundings): a block has 6
    matrix products (QKV, QK^T, PV, out-projection, two MLP layers), each rounding its two inputs and its output,
    so a feature collects N = 18 * layers roundings and a logit, the cosine of two features, twice that error.
    Gradients pass the blocks again backwards with two products per forward product: N = 54 * layers. A factor 2
    of margin covers LayerNorm / softmax / GELU. In half precision the products accumulate in fp32, so the
    dtype's rounding of inputs and outputs is the error; in fp32 the two paths differ only in summation order,
    whose error grows as sqrt(n) per dot product of length n <= 4 * width (the MLP), hence the factor a below.
    """
    u = precision.unit_roundoff
    a = 4 * width if precision.compute_dtype == torch.float32 else 1
    return {"logits": 4 * math.sqrt(18 * layers * a) * u, "grads": 4 * math.sqrt(54 * layers * a) * u}


def parameter_family(name):
    """``vision_gates.3.bias`` -> ``vision_gates.*.bias``: the same tensor at every layer is one family."""
    return ".".join("*" if part.isdigit() else part for part in name.split("."))


class EmulatedPrecision(Precision):
    """The CUDA policy of ``prec`` applied on the CPU, bypassing the CPU fallback to fp32.

    fp16: frozen weights in fp16 (no autocast); amp: fp16 autocast on CPU kernels. Only for checks: CPU fp16
    kernels are slow, and their accumulation order is the CPU's, not a GPU's.
    """

    def __init__(self, prec):  # the parent's CPU fallbacks are what this class skips, so it is not called
        self.prec, self.device = prec, torch.device("cpu")


def precision_for(prec, device, emulate_on_cpu=True):
    """The precision policy a run of ``prec`` on ``device`` uses; on CPU, fp16 / amp emulated when asked."""
    device = torch.device(device)
    if device.type == "cpu" and emulate_on_cpu and prec in ("fp16", "amp"):
        return EmulatedPrecision(prec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback warning is reported as the effective precision instead
        return Precision(prec, device)


def learner_of(trainer):
    """The trainer's registered (trainable, saved) module, or None (ZeroshotCLIP)."""
    names = trainer.get_model_names()
    return trainer._models[names[0]] if names else None


def set_precision(trainer, precision):
    """Make ``trainer`` compute in ``precision``: frozen weights cast if the policy stores them in fp16, its
    autocast, and a GradScaler where the policy uses one. The learner and its optimizer state stay fp32."""
    if precision.casts_frozen_weights:
        trainer.backbone.cast_frozen_to_fp16()  # the family's cast of the frozen model (the learner stays fp32)
    trainer.precision = precision
    trainer.scaler = precision.grad_scaler()
    return trainer


def _learner_parameters(trainer):
    learner = learner_of(trainer)
    if learner is None:
        return {}
    return {name: p for name, p in learner.named_parameters() if p.requires_grad}


@contextlib.contextmanager
def same_random_draws(trainer, device):
    """A training step's random draws the same in every compared call, whichever build makes it: torch's (UPT's
    dropout, ProDA's prompt sampling) and the trainer's own Python generators (CoPrompt's description index) seeded,
    and all put back afterwards."""
    generators = [g for g in vars(trainer).values() if isinstance(g, random.Random)]
    states = [g.getstate() for g in generators]
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(0)
            for generator in generators:
                generator.seed(0)
            yield
    finally:
        for generator, state in zip(generators, states):
            generator.setstate(state)


def logits_and_gradients(trainer, images, labels, straightforward, precision):
    """Training-mode logits [B, n_cls] (fp32, CPU) and each trainable tensor's gradient (fp32, CPU).

    The loss is the trainer's own ``compute_loss`` under ``precision``'s autocast. With fp16 gradients the loss is
    scaled as GradScaler does (2^16, halved until every gradient is finite) and the gradients unscaled.
    Returns ``(logits, grads, loss_scale)``.
    """
    model = trainer.model
    params = _learner_parameters(trainer)
    previous = model.straightforward
    model.straightforward = straightforward
    try:
        scale = INITIAL_LOSS_SCALE if precision.uses_grad_scaler else 1.0
        if not params:  # a trainer with nothing to train (ZeroshotCLIP) has no loss: its model's logits
            with precision.autocast():
                return model(images).detach().float().cpu(), {}, scale
        while True:
            with same_random_draws(trainer, images.device), precision.autocast():
                loss, logits = trainer.compute_loss(images, labels)
            grads = torch.autograd.grad(loss * scale, list(params.values()))
            if all(torch.isfinite(g).all() for g in grads) or scale < 1.0:
                break
            scale /= 2  # what GradScaler does after an overflow
    finally:
        model.straightforward = previous
    grads = {name: (g.float() / scale).cpu() for name, g in zip(params, grads)}
    return logits.detach().float().cpu(), grads, scale


def compare(candidate, reference, logit_scale):
    """Errors of ``(logits, grads)`` against ``(logits_ref, grads_ref)``; see the module docstring."""
    logits, grads = candidate
    logits_ref, grads_ref = reference
    finite = bool(torch.isfinite(logits).all()) and all(bool(torch.isfinite(g).all()) for g in grads.values())
    logits_err = float((logits - logits_ref).abs().max()) / logit_scale if finite else math.inf
    families = {}  # family -> [squared error norm, squared reference norm, number of entries]
    for name, g_ref in grads_ref.items():
        family = families.setdefault(parameter_family(name), [0.0, 0.0, 0])
        family[0] += float((grads[name] - g_ref).norm()) ** 2
        family[1] += float(g_ref.norm()) ** 2
        family[2] += g_ref.numel()
    total_diff_sq = sum(f[0] for f in families.values())
    total_sq = sum(f[1] for f in families.values())
    total_numel = sum(f[2] for f in families.values())
    grads_err = math.sqrt(total_diff_sq / total_sq) if total_sq else math.sqrt(total_diff_sq)
    family_err, worst = 0.0, None
    for family, (diff_sq, ref_sq, numel) in families.items():
        share_sq = total_sq * numel / total_numel  # the family's share of the whole gradient's squared norm
        err = math.sqrt(diff_sq / (max(ref_sq, share_sq) or 1.0))
        if err > family_err or not math.isfinite(err):
            family_err, worst = err, family
    if not finite:
        grads_err = family_err = math.inf
    return {"logits_err": logits_err, "grads_err": grads_err, "family_err": family_err, "worst_family": worst,
            "finite": finite}


def eval_logits(trainer, images, precision):
    """Logits of the trainer's evaluation path (``model_inference`` under no_grad, text cache filled and reused)."""
    previous = trainer.precision
    trainer.precision = precision
    try:
        with torch.no_grad(), trainer.evaluation_scope():
            trainer.model_inference(images[:1])  # fills the text cache, as the first batch of a test() does
            return trainer.model_inference(images).float().cpu()
    finally:
        trainer.precision = previous


def model_shape(model):
    """``(layers, width)`` of a PromptedCLIP: the deeper transformer's block count and the wider one's width."""
    encoders = [model.text_encoder, model.image_encoder]
    shapes = [(e.num_layers, e.width) for e in encoders if hasattr(e, "num_layers")]  # a ResNet has no blocks
    return max(s[0] for s in shapes), max(s[1] for s in shapes)


def check_trainer(build, trainer_id, images, labels, precs=HALF_PRECISIONS, emulate_on_cpu=True,
                  released_in_prec=True):
    """Parity records for one trainer: fp32 fast vs straightforward, then every ``prec`` against both references.

    ``build(trainer_id, prec)`` returns a trainer built as ``train.py`` builds it with ``PREC prec`` (the caller picks
    device, backbone and classes). Each record: ``prec``, ``effective_prec``, ``emulated``, ``errors`` (of
    :func:`compare`, against ``fp32 straightforward`` and ``fp32 fast``; with ``released_in_prec`` also the
    straightforward path in ``prec`` against fp32, for information), the evaluation path's error, the tolerances and
    ``passed``.
    """
    reference = build(trainer_id, "fp32")
    device = reference.device
    images, labels = images.to(device), labels.to(device)
    fp32 = Precision("fp32", device)
    logit_scale = float(reference.model.logit_scale.exp())
    shape = model_shape(reference.model)
    slow = logits_and_gradients(reference, images, labels, True, fp32)[:2]
    fast = logits_and_gradients(reference, images, labels, False, fp32)[:2]
    records = [_record("fp32", fp32, shape, {"vs_fp32_straightforward": compare(fast, slow, logit_scale)},
                       _eval_error(reference, images, fp32, logit_scale))]
    learner = learner_of(reference)
    state = copy.deepcopy(learner.state_dict()) if learner is not None else None
    for prec in precs:
        precision = precision_for(prec, device, emulate_on_cpu)
        if precision.casts_frozen_weights:  # a trainer of its own: its frozen weights are fp16
            trainer = build(trainer_id, prec)
            if isinstance(precision, EmulatedPrecision):
                set_precision(trainer, precision)
            if state is not None:
                learner_of(trainer).load_state_dict(state)  # the reference's trainable weights, exactly
        else:  # amp / bf16 keep fp32 weights: the reference trainer under another autocast
            trainer = set_precision(reference, precision)
        logits, grads, loss_scale = logits_and_gradients(trainer, images, labels, False, precision)
        errors = {"vs_fp32_straightforward": compare((logits, grads), slow, logit_scale),
                  "vs_fp32_fast": compare((logits, grads), fast, logit_scale)}
        if released_in_prec:
            released = logits_and_gradients(trainer, images, labels, True, precision)[:2]
            errors["released_in_prec_vs_fp32"] = compare(released, slow, logit_scale)
        records.append(_record(prec, precision, shape, errors,
                               _eval_error(trainer, images, precision, logit_scale), loss_scale))
        set_precision(reference, fp32)
        del trainer
    return records


def _eval_error(trainer, images, precision, logit_scale):
    """Evaluation path (``model_inference`` with the text cache) vs the same ``model_inference`` without the cache,
    both in eval mode (no dropout), same precision, in cosine units.

    For most methods that is the model's own forward (UPT's without dropout); MMRL's test reads the head its TASK
    chooses, and ProDA's forward is its evaluation's computation (its training step uses a subset of its prompts)."""
    training, previous = trainer.model.training, trainer.precision
    trainer.model.eval()  # as in an evaluation: no dropout
    trainer.precision = precision
    try:
        with torch.no_grad():
            uncached = trainer.model_inference(images).float().cpu()
        evaluated = eval_logits(trainer, images, precision)
    finally:
        trainer.model.train(training)
        trainer.precision = previous
    return float((evaluated - uncached).abs().max()) / logit_scale


JUDGED = ("vs_fp32_straightforward", "vs_fp32_fast")  # errors[...] with a verdict; the rest is information


def _within(errors, tol, fp32):
    """Whether one comparison is within the tolerances (families judged in fp32 only; see the module docstring)."""
    return (errors["finite"] and errors["logits_err"] <= tol["logits"] and errors["grads_err"] <= tol["grads"]
            and (not fp32 or errors["family_err"] <= tol["grads"]))


def _record(prec, precision, shape, errors, eval_err, loss_scale=1.0):
    tol = tolerances(precision, *shape)
    fp32 = precision.compute_dtype == torch.float32
    passed = all(_within(errors[k], tol, fp32) for k in JUDGED if k in errors) and eval_err <= tol["logits"]
    return {"prec": prec, "effective_prec": precision.prec, "emulated": isinstance(precision, EmulatedPrecision),
            "errors": errors, "eval_vs_train_logits_err": eval_err, "tolerances": tol, "unit_roundoff":
            precision.unit_roundoff, "families_judged": fp32, "layers_width": list(shape), "loss_scale": loss_scale,
            "passed": passed}

"""Every prompt trainer on the tiny random-weight CLIP: fast path == straightforward path, the eval text cache,
depth-1 and MaPLe/IVLP equivalences, training steps in each CPU precision, checkpoints (ours and released), and
ResNet handling. Models are built directly; trainers are built through train.py on a tiny ImageFolder tree."""
import os
import warnings

import pytest
import torch
import torch.nn.functional as F

from clip_patch import load_backbone
from dassl.config import extend_cfg, get_cfg_default
from dassl.engine import TRAINER_REGISTRY, build_trainer
from dassl.utils import CheckpointError
from runs.config import build_parser, setup_cfg
from sweeps import protocols
from tests.toy_data import make_toy_dataset, toy_opts
from trainers.base import FrozenCLIPTrainer, PromptedCLIP
from trainers.bitp import CONNECT_METHODS, BITPPromptLearner
from trainers.bmip import BMIPPromptLearner
from trainers.cocoop import CoCoOpCLIP, CoCoOpPromptLearner
from trainers.coop import CoOpPromptLearner
from trainers.coprompt import CoPromptBMIPLearner, CoPromptLearner
from trainers.ivlp import VisionLanguagePrompts
from trainers.kgcoop import KgCoOpPromptLearner, fill_template, knowledge_features
from trainers.maple import MaPLePromptLearner
from trainers.mma import AdapterLearner
from trainers.mmrl import LOGIT_SCALE, RepresentationCLIP, RepresentationLearner
from trainers.mmrlpp import ResidualRepresentationLearner
from trainers.proda import ProDACLIP, ProDAPromptLearner
from trainers.tcp import TCPPromptLearner
from trainers.upt import UnifiedPromptCLIP, UPTPromptLearner
from trainers.zsclip import HandcraftedPrompts, ZeroshotCLIP

CLASSNAMES = ["cat", "dog", "sea_lion", "red panda"]
TOL = 1e-5


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_backbone("tiny-ViT")


def method_cfg(node, **values):
    """The default ``cfg.TRAINER.<node>`` with ``values`` set."""
    cfg = extend_cfg(get_cfg_default())
    for key, value in values.items():
        cfg.TRAINER[node][key] = value
    return cfg.TRAINER[node]


def bitp_builder(connect):
    return lambda c: PromptedCLIP(c, BITPPromptLearner(c, CLASSNAMES, 2, "a photo of a", 9, connect, True, True))


def knowledge_guided_builder(learner_class, cfg, *args):
    """KgCoOp's and TCP's learners with the release's fp16 knowledge target of CLASSNAMES."""
    def build(backbone):
        target = knowledge_features(backbone, fill_template("a photo of a {}.", CLASSNAMES), "cpu", True)
        return PromptedCLIP(backbone, learner_class(cfg, CLASSNAMES, backbone, *args, target))
    return build


# name -> clip_model -> model; every published trainer and variant, on the tiny backbone
MODEL_BUILDERS = {
    "ZeroshotCLIP": lambda c: PromptedCLIP(c, HandcraftedPrompts(c, CLASSNAMES, "a photo of a {}.")),
    "CoOp": lambda c: PromptedCLIP(c, CoOpPromptLearner(method_cfg("COOP", N_CTX=4), CLASSNAMES, c)),
    "CoOp-ctx_init": lambda c: PromptedCLIP(c, CoOpPromptLearner(
        method_cfg("COOP", CTX_INIT="a photo of a"), CLASSNAMES, c)),
    "CoOp-csc": lambda c: PromptedCLIP(c, CoOpPromptLearner(method_cfg("COOP", N_CTX=4, CSC=True), CLASSNAMES, c)),
    "CoOp-middle": lambda c: PromptedCLIP(c, CoOpPromptLearner(
        method_cfg("COOP", N_CTX=4, CLASS_TOKEN_POSITION="middle"), CLASSNAMES, c)),
    "CoOp-front-csc": lambda c: PromptedCLIP(c, CoOpPromptLearner(
        method_cfg("COOP", N_CTX=4, CSC=True, CLASS_TOKEN_POSITION="front"), CLASSNAMES, c)),
    "CoCoOp": lambda c: CoCoOpCLIP(c, CoCoOpPromptLearner(method_cfg("COCOOP", N_CTX=4), CLASSNAMES, c)),
    "IVLP": lambda c: PromptedCLIP(c, VisionLanguagePrompts(c, CLASSNAMES, "a photo of a", 2, 9, 2, 9)),
    "IVLP-language_only": lambda c: PromptedCLIP(c, VisionLanguagePrompts(c, CLASSNAMES, "a photo of a", 4, 12, 0, 0)),
    "VPT": lambda c: PromptedCLIP(c, VisionLanguagePrompts(c, CLASSNAMES, "a photo of a", 0, 0, 8, 12)),
    "MaPLe": lambda c: PromptedCLIP(c, MaPLePromptLearner(c, CLASSNAMES, 2, "a photo of a", 9)),
    "BMIP-reference": lambda c: PromptedCLIP(c, BMIPPromptLearner(
        c, CLASSNAMES, 2, "a photo of a", 9, "reference", True, True)),
    "BMIP-per_sample": lambda c: PromptedCLIP(c, BMIPPromptLearner(
        c, CLASSNAMES, 2, "a photo of a", 9, "per_sample", True, True)),
    "BMIP-reference-per_layer_heads": lambda c: PromptedCLIP(c, BMIPPromptLearner(
        c, CLASSNAMES, 2, "a photo of a", 9, "reference", False, False)),
    **{f"BITP-{connect}": bitp_builder(connect) for connect in CONNECT_METHODS},
    "UPT": lambda c: UnifiedPromptCLIP(c, UPTPromptLearner(c, CLASSNAMES, 2, "a photo of a", 9)).eval(),  # no dropout
    "ProDA": lambda c: ProDACLIP(c, ProDAPromptLearner(c, CLASSNAMES, 4, 8, False)),  # its forward: all 8 prompts
    "KgCoOp": knowledge_guided_builder(KgCoOpPromptLearner, method_cfg("KGCOOP", CTX_INIT=True)),
    "TCP": knowledge_guided_builder(TCPPromptLearner, method_cfg("TCP"), "X X X X {}."),
    # scale 0.1: the adapters visible in the logits; released gradient scaling (x10)
    "MMA": lambda c: PromptedCLIP(c, AdapterLearner(c, CLASSNAMES, "a photo of a", 5, 12, 32, 0.1)),
    # representation tokens before blocks 2, 3 and 5 (a gap at 4); the fused logits
    "MMRL": lambda c: RepresentationCLIP(c, RepresentationLearner(c, CLASSNAMES, "a photo of a {}.", [2, 3, 5], 3, 16),
                                         0.7),
    "MMRLpp": lambda c: RepresentationCLIP(c, ResidualRepresentationLearner(
        c, CLASSNAMES, "a photo of a {}.", [2, 3, 5], 3, 16, 0.6, 8, 4), 0.7),
    # without the release's fp16 rounding of the prompts (tests/test_coprompt.py), which rounds gradients to fp16 too
    "CoPrompt": lambda c: PromptedCLIP(c, CoPromptLearner(c, CLASSNAMES, 2, "a photo of a", 9, False)),
    "CoPrompt_BMIP-per_sample": lambda c: PromptedCLIP(c, CoPromptBMIPLearner(
        c, CLASSNAMES, 2, "a photo of a", 9, "per_sample", True, True)),
}


def build_model(name, clip_model, seed=0):
    torch.manual_seed(seed)
    return MODEL_BUILDERS[name](clip_model)


def logits_and_gradients(model, image, label):
    """Logits [B, n_cls] and the gradients of the cross-entropy w.r.t. every learner parameter and the image."""
    image = image.clone().requires_grad_(True)
    params = dict(model.prompt_learner.named_parameters())
    for p in params.values():
        p.grad = None
    logits = model(image)
    F.cross_entropy(logits, label).backward()
    grads = {name: p.grad.clone() for name, p in params.items()}
    grads["<image>"] = image.grad.clone()
    return logits.detach(), grads


# -- fast path == straightforward path -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MODEL_BUILDERS))
def test_fast_path_equals_straightforward_path(tiny, name):
    model = build_model(name, tiny)
    torch.manual_seed(1)
    image, label = torch.randn(3, 3, 32, 32), torch.tensor([0, 3, 1])
    fast_logits, fast_grads = logits_and_gradients(model, image, label)
    model.straightforward = True
    naive_logits, naive_grads = logits_and_gradients(model, image, label)
    assert fast_logits.shape == (3, len(CLASSNAMES))
    # fp32 rounding grows with the logit scale: TOL within CLIP's (<= 1/0.07), scaled for MMRL's hard-coded 100
    scale = LOGIT_SCALE if isinstance(model, RepresentationCLIP) else model.logit_scale.exp().item()
    assert (fast_logits - naive_logits).abs().max() <= TOL * max(1.0, scale * 0.07)
    assert fast_grads.keys() == naive_grads.keys()
    for key in fast_grads:  # absolute for gradients of order 1; relative for larger ones (fp32 rounding scales)
        scale = max(1.0, naive_grads[key].abs().max().item())
        assert (fast_grads[key] - naive_grads[key]).abs().max() <= TOL * scale, key
    assert fast_grads["<image>"].abs().sum() > 0


@pytest.mark.parametrize("name", sorted(set(MODEL_BUILDERS) - {"ZeroshotCLIP"}))
def test_every_learner_parameter_gets_a_finite_gradient(tiny, name):
    model = build_model(name, tiny)
    _, grads = logits_and_gradients(model, torch.randn(2, 3, 32, 32), torch.tensor([0, 2]))
    zero_by_design = {f"text_gates.{k}.weight" for k in range(7)} if name.startswith("BMIP-reference") else set()
    if name == "MMRLpp":  # low-rank residuals A @ B start with B = 0, so A gets no gradient in the first step
        zero_by_design = {key for key in grads if key.split(".")[-1] == "A"}
    assert len(grads) > 1
    for key, grad in grads.items():
        assert torch.isfinite(grad).all() and (not grad.any()) == (key in zero_by_design), key


# -- evaluation-time text cache ------------------------------------------------------------------------------------
class TextEncoderCalls:
    """Counts the runs of a model's text encoder."""

    def __init__(self, model):
        self.count = 0
        model.text_encoder.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.count += 1


def reference_logits(model, image):
    """Logits of ``model`` computed the straightforward way (which never uses the cache)."""
    model.straightforward = True
    try:
        return model(image)
    finally:
        model.straightforward = False


@pytest.mark.parametrize("name", ["MaPLe", "BMIP-reference", "CoOp"])
def test_eval_text_features_are_cached_only_within_one_text_cache_scope(tiny, name):
    model = build_model(name, tiny)
    calls = TextEncoderCalls(model)
    images = [torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)]
    with torch.no_grad(), model.text_cache():
        first = [model(image) for image in images]
    assert calls.count == 1  # two eval batches in one scope, one text-encoder run
    torch.testing.assert_close(first[1], reference_logits(model, images[1]), atol=TOL, rtol=0)

    count = calls.count
    with model.text_cache():  # training forwards never use the cache
        F.cross_entropy(model(images[0]), torch.tensor([0, 1])).backward()
        F.cross_entropy(model(images[0]), torch.tensor([0, 1])).backward()
    assert calls.count == count + 2
    with torch.no_grad():  # outside a scope nothing is cached
        count = calls.count
        model(images[0]), model(images[0])
        assert calls.count == count + 2

        for p in model.prompt_learner.parameters():  # an in-place edit between two scopes is always seen
            p.data.mul_(1.5)
        with model.text_cache():
            edited = model(images[0])
        assert calls.count == count + 3
        assert (edited - first[0]).abs().max() > 1e-4
        torch.testing.assert_close(edited, reference_logits(model, images[0]), atol=TOL, rtol=0)
        count = calls.count
        with model.text_cache():
            with model.text_cache():  # a nested scope shares the outer one's features
                model(images[0])
            model(images[1])
        assert calls.count == count + 1


def test_straightforward_path_never_caches(tiny):
    model = build_model("IVLP", tiny)
    model.straightforward = True
    calls = TextEncoderCalls(model)
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
        model(torch.randn(1, 3, 32, 32))
    assert calls.count == 2


# -- equivalences between methods ----------------------------------------------------------------------------------
def test_maple_equals_ivlp_given_maples_projected_prompts(tiny):
    maple = build_model("MaPLe", tiny, seed=0)
    ivlp = build_model("IVLP", tiny, seed=1)
    image = torch.randn(3, 3, 32, 32)
    m, v = maple.prompt_learner, ivlp.prompt_learner
    with torch.no_grad():
        assert (maple(image) - ivlp(image)).abs().max() > 1e-3
        v.ctx.copy_(m.ctx)
        v.ctx_vision.copy_(m.proj(m.ctx))
        for k in range(8):
            v.deep_text[k].copy_(m.compound_prompts_text[k])
            v.deep_vision[k].copy_(m.compound_prompt_projections[k](m.compound_prompts_text[k]))
        torch.testing.assert_close(ivlp(image), maple(image), atol=TOL, rtol=0)


class WithoutDeepPrompts(torch.nn.Module):
    """A learner's shallow prompts with the deep-prompt mechanism removed."""

    def __init__(self, learner):
        super().__init__()
        self.learner = learner

    def text_inputs(self):
        embeddings, tokens, _ = self.learner.text_inputs()
        return embeddings, tokens, None

    def vision_inputs(self):
        shallow, _ = self.learner.vision_inputs()
        return shallow, None


SHALLOW_BUILDERS = {  # PROMPT_DEPTH 1 -> (learner, the names of its parameters)
    "BMIP": (lambda c: BMIPPromptLearner(c, CLASSNAMES, 2, "a photo of a", 1, "reference", True, True),
             {"ctx_t", "proj_t.weight", "proj_t.bias"}),
    "MaPLe": (lambda c: MaPLePromptLearner(c, CLASSNAMES, 2, "a photo of a", 1), {"ctx", "proj.weight", "proj.bias"}),
    "IVLP": (lambda c: VisionLanguagePrompts(c, CLASSNAMES, "a photo of a", 2, 1, 2, 1), {"ctx", "ctx_vision"}),
    "VPT": (lambda c: VisionLanguagePrompts(c, CLASSNAMES, "a photo of a", 0, 0, 8, 1), {"ctx_vision"}),
}


@pytest.mark.parametrize("name", sorted(SHALLOW_BUILDERS))
def test_depth_1_is_shallow_prompts_only(tiny, name):
    build, expected_names = SHALLOW_BUILDERS[name]
    torch.manual_seed(0)
    learner = build(tiny)
    assert {n for n, _ in learner.named_parameters()} == expected_names
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits = PromptedCLIP(tiny, learner)(image)
        assert torch.equal(logits, PromptedCLIP(tiny, WithoutDeepPrompts(learner))(image))
        unprompted = PromptedCLIP(tiny, HandcraftedPrompts(tiny, CLASSNAMES, "a photo of a {}."))(image)
        assert (logits - unprompted).abs().max() > 1e-4  # the shallow prompts do act


def test_shallow_bmip_is_shallow_maple(tiny):
    torch.manual_seed(0)
    bmip = SHALLOW_BUILDERS["BMIP"][0](tiny)
    maple = SHALLOW_BUILDERS["MaPLe"][0](tiny)
    maple.load_state_dict({"ctx": bmip.ctx_t, "proj.weight": bmip.proj_t.weight, "proj.bias": bmip.proj_t.bias})
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(PromptedCLIP(tiny, bmip)(image), PromptedCLIP(tiny, maple)(image))


# -- trainers built through train.py -------------------------------------------------------------------------------
TRAINER_OPTS = {  # run name -> (registered trainer, config node, extra KEY VALUE options)
    "CoOp": ("CoOp", "COOP", ["TRAINER.COOP.N_CTX", "4"]),
    "CoCoOp": ("CoCoOp", "COCOOP", ["TRAINER.COCOOP.N_CTX", "4"]),
    "IVLP": ("IVLP", "IVLP", []),
    "VPT": ("VPT", "VPT", ["TRAINER.VPT.PROMPT_DEPTH_VISION", "9"]),
    "MaPLe": ("MaPLe", "MAPLE", []),
    "BMIP-reference": ("BMIP", "BMIP", []),
    "BMIP-per_sample": ("BMIP", "BMIP", ["TRAINER.BMIP.MODE", "per_sample"]),
    "BITP-joint": ("BITP", "BITP", ["TRAINER.BITP.CONNECT_METHOD", "joint"]),
    "BITP-exchange": ("BITP", "BITP", ["TRAINER.BITP.CONNECT_METHOD", "exchange"]),
}
CHECKPOINT_FOLDER = {"CoOp": "prompt_learner", "CoCoOp": "prompt_learner", "VPT": "prompt_learner",
                     "IVLP": "VLPromptLearner", "MaPLe": "MultiModalPromptLearner", "BMIP": "MultiModalPromptLearner",
                     "BITP": "MultiModalPromptLearner"}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_toy_dataset(str(root))
    make_toy_dataset(str(root), name="other", classnames=["teapot", "violin", "zebra"])
    return root


def build_toy_trainer(root, run, prec="fp32", dataset="toy", backbone="tiny-ViT", extra=()):
    """A trainer built by train.py's config path on the toy ImageFolder tree; ``run`` is a TRAINER_OPTS key or a
    registered trainer run with its defaults (PREC set in its own node, e.g. TRAINER.COOP for ZeroshotCLIP)."""
    if run in TRAINER_OPTS:
        trainer_name, node, opts = TRAINER_OPTS[run]
    else:
        trainer_name, node, opts = run, TRAINER_REGISTRY.get(run).CFG_NODE, []
    argv = ["--root", str(root), "--trainer", trainer_name, "--output-dir", str(root / "out" / run)]
    argv += toy_opts(str(root), name=dataset, optim="adam", lr=0.01) + opts + [f"TRAINER.{node}.PREC", prec]
    argv += ["MODEL.BACKBONE.NAME", backbone, "MODEL.INIT_SEED", "0", *extra]
    trainer = build_trainer(setup_cfg(build_parser().parse_args(argv)))
    trainer.batch_idx, trainer.num_batches = 0, 10 ** 6  # forward_backward outside an epoch: no LR step
    return trainer


def fixed_batch(trainer):
    torch.manual_seed(0)
    return next(iter(trainer.train_loader_x))


def learner_of(trainer):
    (name,) = trainer.get_model_names()
    return trainer._models[name]


@pytest.mark.parametrize("prec", ["fp32", "bf16"])
@pytest.mark.parametrize("run", sorted(TRAINER_OPTS))
def test_optimizer_steps_reduce_the_loss_without_nan(data_root, run, prec):
    trainer = build_toy_trainer(data_root, run, prec)
    batch = fixed_batch(trainer)
    losses = [trainer.forward_backward(batch)["loss"] for _ in range(6)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.01, losses
    learner = learner_of(trainer)
    for p in learner.parameters():
        assert p.dtype == torch.float32 and torch.isfinite(p).all()
    states = list(trainer._optims[trainer.get_model_names()[0]].state.values())
    assert states and all(t.dtype == torch.float32 for s in states for t in s.values() if t.dim() > 0)
    learner_ids = {id(p) for p in learner.parameters()}
    frozen = [p for p in trainer.model.parameters() if id(p) not in learner_ids]
    assert frozen and all(not p.requires_grad and p.dtype == torch.float32 for p in frozen)


def test_prec_fp16_on_cpu_warns_once_and_runs_fp32(data_root):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = build_toy_trainer(data_root, "BMIP-reference", prec="fp16")
        batch = fixed_batch(trainer)
        summary = trainer.forward_backward(batch)
        logits = trainer.model_inference(batch["img"])
    prec_warnings = [str(w.message) for w in caught if "PREC" in str(w.message)]
    assert prec_warnings == ["PREC 'fp16' needs a CUDA device; running in fp32 on cpu"]
    assert trainer.precision.prec == "fp32" and trainer.scaler is None
    assert trainer.model.image_encoder.conv1.weight.dtype == torch.float32
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all() and summary["loss"] > 0


def test_zeroshot_clip_evaluates_and_refuses_to_train(data_root):
    trainer = build_toy_trainer(data_root, "ZeroshotCLIP")
    logits = trainer.model_inference(fixed_batch(trainer)["img"])
    assert logits.shape == (4, 6) and torch.isfinite(logits).all()
    with pytest.raises(RuntimeError, match="--eval-only"):
        trainer.train()


def test_whether_a_trainer_learns_is_its_class_fact_and_decides_its_sweep_jobs(tmp_path, monkeypatch):
    """``LEARNS`` alone decides whether a trainer's protocol chains hold a training run: a new registered trainer is
    planned by existing; a name this repository does not register (another codebase's) trains."""
    class TemplateEnsembleCLIP(ZeroshotCLIP):  # a frozen method that fits nothing
        pass

    class FittedHeadCLIP(FrozenCLIPTrainer):  # a frozen method with a fit
        LEARNS = True

    for newcomer in (TemplateEnsembleCLIP, FittedHeadCLIP):
        monkeypatch.setitem(TRAINER_REGISTRY._obj_map, newcomer.__name__, newcomer)
    learns = {"ZeroshotCLIP": False, "TemplateEnsembleCLIP": False, "LinearProbeCLIP": True, "CoOp": True,
              "FittedHeadCLIP": True, "AnotherCodebasesCoOp": True}
    for trainer, expected in learns.items():
        chain = protocols.base2new(tmp_path, trainer, "c1", "dtd", 1)
        splits = [job.output_dir.parts[-6] for job in chain]
        assert splits == (["train_base"] if expected else []) + ["test_base", "test_new"], trainer
        assert [job.model_dir for job in chain[-2:]] == [chain[0].output_dir if expected else None] * 2


def test_trainer_evaluation_encodes_the_class_texts_once_and_sees_in_place_edits(data_root):
    trainer = build_toy_trainer(data_root, "BMIP-reference")
    calls = TextEncoderCalls(trainer.model)
    logits = []
    process = trainer.evaluator.process
    trainer.evaluator.process = lambda output, label: (logits.append(output), process(output, label))
    assert len(trainer.test_loader) > 1
    accuracy = trainer.test()
    assert calls.count == 1 and 0 <= accuracy <= 100
    evaluated, logits[:] = torch.cat(logits), []
    trainer.model.prompt_learner.ctx_t.data.mul_(3.0)  # an in-place edit between evaluations (no step, no load)
    trainer.test()
    assert calls.count == 2
    assert (torch.cat(logits) - evaluated).abs().max() > 1e-3


@pytest.mark.parametrize("run", ["IVLP", "VPT", "MaPLe", "BMIP-reference", "BITP-joint", "UPT"])
def test_resnet_backbone_is_rejected_for_visual_prompt_trainers(data_root, run):
    with pytest.raises(ValueError, match="needs a ViT backbone.*MODEL.BACKBONE.NAME"):
        build_toy_trainer(data_root, run, backbone="tiny-RN")


@pytest.mark.parametrize("run", ["CoOp", "CoCoOp", "ProDA", "ZeroshotCLIP"])
def test_resnet_backbone_works_for_text_prompt_trainers(data_root, run):
    trainer = build_toy_trainer(data_root, run, backbone="tiny-RN")
    batch = fixed_batch(trainer)
    if run != "ZeroshotCLIP":
        assert torch.isfinite(torch.tensor(trainer.forward_backward(batch)["loss"]))
    with torch.no_grad():
        assert trainer.model_inference(batch["img"]).shape == (4, 6)


# -- checkpoints ---------------------------------------------------------------------------------------------------
def eval_logits(trainer, images):
    trainer.set_model_mode("eval")
    with torch.no_grad():
        return trainer.model_inference(images)


@pytest.mark.parametrize("run", sorted(TRAINER_OPTS))
def test_checkpoint_holds_only_the_learner_and_loads_back(data_root, tmp_path, run):
    trainer = build_toy_trainer(data_root, run)
    batch = fixed_batch(trainer)
    for _ in range(2):
        trainer.forward_backward(batch)
    trainer.save_model(0, str(tmp_path))
    folder = CHECKPOINT_FOLDER[TRAINER_OPTS[run][0]]
    assert trainer.get_model_names() == [folder]
    saved = torch.load(tmp_path / folder / "model.pth.tar-1", map_location="cpu", weights_only=True)
    learner = learner_of(trainer)
    assert set(saved["state_dict"]) == {name for name, _ in learner.named_parameters()}
    assert all(t.dtype == torch.float32 for t in saved["state_dict"].values())

    fresh = build_toy_trainer(data_root, run, extra=["MODEL.INIT_SEED", "5"])
    assert (eval_logits(fresh, batch["img"]) - eval_logits(trainer, batch["img"])).abs().max() > 1e-4
    fresh.load_model(str(tmp_path), epoch=1)
    torch.testing.assert_close(eval_logits(fresh, batch["img"]), eval_logits(trainer, batch["img"]), atol=TOL, rtol=0)


def test_checkpoint_evaluates_on_other_class_names(data_root, tmp_path):
    trainer = build_toy_trainer(data_root, "BMIP-reference")
    with torch.no_grad():
        learner_of(trainer).ctx_t.add_(0.5)  # a context the other run's initialisation (the same seed) does not hold
    trainer.save_model(0, str(tmp_path))
    other = build_toy_trainer(data_root, "BMIP-reference", dataset="other")
    assert not torch.equal(learner_of(other).ctx_t, learner_of(trainer).ctx_t)
    other.load_model(str(tmp_path), epoch=1)
    assert torch.equal(learner_of(other).ctx_t, learner_of(trainer).ctx_t)
    assert eval_logits(other, fixed_batch(other)["img"]).shape == (4, 3)


def test_checkpoint_of_another_depth_is_rejected_with_the_cause(data_root, tmp_path):
    build_toy_trainer(data_root, "MaPLe").save_model(0, str(tmp_path))
    shallow = build_toy_trainer(data_root, "MaPLe", extra=["TRAINER.MAPLE.PROMPT_DEPTH", "3"])
    with pytest.raises(CheckpointError, match="unexpected keys.*compound_prompts_text.2.*PROMPT_DEPTH"):
        shallow.load_model(str(tmp_path), epoch=1)


def test_missing_checkpoint_names_the_path_and_the_fix(data_root, tmp_path):
    trainer = build_toy_trainer(data_root, "IVLP")
    with pytest.raises(FileNotFoundError, match='"model-best.pth.tar" for model "VLPromptLearner".*--model-dir'):
        trainer.load_model(str(tmp_path))


def frozen_release_weights(trainer):
    """The frozen CLIP weights as the released CustomCLIP names them (fp16), plus ``logit_scale``."""
    clip_visual = trainer.backbone.model.visual
    text_blocks = trainer.model.text_encoder.blocks
    weights = {f"image_encoder.{k}": v for k, v in clip_visual.state_dict().items()}
    weights.update({f"text_encoder.transformer.resblocks.{k}": v for k, v in text_blocks.state_dict().items()})
    weights["text_encoder.positional_embedding"] = trainer.model.text_encoder.positional_embedding
    weights["logit_scale"] = trainer.model.logit_scale
    return weights


def write_release(directory, folder, state_dict, epoch=10):
    """A whole-model checkpoint in the reference code's format, with every tensor in fp16."""
    path = directory / folder / f"model.pth.tar-{epoch}"
    os.makedirs(path.parent, exist_ok=True)
    state_dict = {k: v.detach().clone().half() for k, v in state_dict.items()}
    torch.save({"state_dict": state_dict, "epoch": epoch, "optimizer": {"state": {}, "param_groups": []},
                "scheduler": {"last_epoch": epoch}}, path)
    return state_dict


def random_tensors(shapes, generator):
    return {k: torch.randn(*shape, generator=generator) * 0.1 for k, shape in shapes.items()}


def test_released_bmip_checkpoint_loads_like_setting_the_tensors_by_hand(data_root, tmp_path):
    loaded = build_toy_trainer(data_root, "BMIP-reference")
    d_t, d_v, b, n_blocks = 64, 64, 2, 12
    g = torch.Generator().manual_seed(0)
    shapes = {"prompt_learner.ctx_t": (b, d_t), "prompt_learner.proj_t.weight": (d_v, d_t),
              "prompt_learner.proj_t.bias": (d_v,), "prompt_learner.single_layer_t.weight": (d_v, d_t),
              "prompt_learner.single_layer_t.bias": (d_v,), "prompt_learner.single_layer_v.weight": (d_t, d_v),
              "prompt_learner.single_layer_v.bias": (d_t,),
              # dead tensors of the release and class-dependent buffers of another class set (10 classes)
              "prompt_learner.ctx_v": (77, d_v), "prompt_learner.proj_v.weight": (d_t, d_v),
              "prompt_learner.proj_v.bias": (d_t,), "prompt_learner.exchange_layer_t.weight": (d_t, 2 * d_t),
              "prompt_learner.exchange_layer_t.bias": (d_t,), "prompt_learner.exchange_layer_v.weight": (d_v, 2 * d_v),
              "prompt_learner.exchange_layer_v.bias": (d_v,), "prompt_learner.token_prefix": (10, 1, d_t),
              "prompt_learner.token_suffix": (10, 77 - 1 - b, d_t)}
    for k in range(8):
        shapes[f"prompt_learner.compound_prompts_text.{k}"] = (b, d_t)
        shapes[f"prompt_learner.compound_prompts_visual.{k}"] = (b, d_v)
    for encoder in ("image_encoder", "text_encoder"):
        for layer in range(n_blocks):  # every block holds both gates; only some are used
            for gate in ("learnable_linear1", "learnable_linear2"):
                shapes[f"{encoder}.transformer.resblocks.{layer}.{gate}.weight"] = (1, 1)
                shapes[f"{encoder}.transformer.resblocks.{layer}.{gate}.bias"] = (1,)
    release = random_tensors(shapes, g)
    release.update(frozen_release_weights(loaded))
    release = write_release(tmp_path, "MultiModalPromptLearner", release)
    images = fixed_batch(loaded)["img"]
    before = eval_logits(loaded, images)
    loaded.load_model(str(tmp_path), epoch=10)

    by_hand = build_toy_trainer(data_root, "BMIP-reference", extra=["MODEL.INIT_SEED", "3"])
    learner = learner_of(by_hand)
    with torch.no_grad():
        for name, p in learner.named_parameters():
            if "gates" not in name:
                p.copy_(release[f"prompt_learner.{name}"].float())
        for layer in range(1, 9):  # vision blocks 1..8 -> vision_gates 0..7
            for param in ("weight", "bias"):
                getattr(learner.vision_gates[layer - 1], param).copy_(
                    release[f"image_encoder.transformer.resblocks.{layer}.learnable_linear1.{param}"].float())
        for layer in range(1, 8):  # text blocks 1..7 -> text_gates 0..6
            for param in ("weight", "bias"):
                getattr(learner.text_gates[layer - 1], param).copy_(
                    release[f"text_encoder.transformer.resblocks.{layer}.learnable_linear2.{param}"].float())
    after = eval_logits(loaded, images)
    assert all(p.dtype == torch.float32 for p in learner_of(loaded).parameters())
    assert (after - before).abs().max() > 1e-3
    assert torch.equal(after, eval_logits(by_hand, images))
    for (name, p), q in zip(learner_of(loaded).named_parameters(), learner.parameters()):
        assert torch.equal(p, q), name


def test_released_maple_checkpoint_loads_like_setting_the_tensors_by_hand(data_root, tmp_path):
    loaded = build_toy_trainer(data_root, "MaPLe")
    d_t, d_v, b = 64, 64, 2
    shapes = {"prompt_learner.ctx": (b, d_t), "prompt_learner.proj.weight": (d_v, d_t),
              "prompt_learner.proj.bias": (d_v,), "prompt_learner.token_prefix": (10, 1, d_t),
              "prompt_learner.token_suffix": (10, 77 - 1 - b, d_t)}
    for k in range(8):
        shapes[f"prompt_learner.compound_prompts_text.{k}"] = (b, d_t)
        shapes[f"prompt_learner.compound_prompt_projections.{k}.weight"] = (d_v, d_t)
        shapes[f"prompt_learner.compound_prompt_projections.{k}.bias"] = (d_v,)
    release = random_tensors(shapes, torch.Generator().manual_seed(1))
    release.update(frozen_release_weights(loaded))
    release = write_release(tmp_path, "MultiModalPromptLearner", release, epoch=5)
    images = fixed_batch(loaded)["img"]
    before = eval_logits(loaded, images)
    loaded.load_model(str(tmp_path), epoch=5)

    by_hand = build_toy_trainer(data_root, "MaPLe", extra=["MODEL.INIT_SEED", "3"])
    with torch.no_grad():
        for name, p in learner_of(by_hand).named_parameters():
            p.copy_(release[f"prompt_learner.{name}"].float())
    after = eval_logits(loaded, images)
    assert (after - before).abs().max() > 1e-3
    assert torch.equal(after, eval_logits(by_hand, images))

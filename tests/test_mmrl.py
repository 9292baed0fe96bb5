"""MMRL and MMRL++ against an independent re-computation of the released code (yunncheng/MMRL ``trainers/mmrl.py``,
``trainers/mmrlpp.py`` with the blocks of ``clip/model_mmrl.py`` / ``clip/model_mmrlpp.py``), written here on the
OpenAI CLIP modules themselves: released weights -> our learner -> the released logits of both heads, one training
step's loss terms and gradients, the test head per TASK, the per-dataset settings, released checkpoints in and out,
config errors."""
import math

import pytest
import torch
import torch.nn.functional as F

from clip_patch import load_backbone
from clip_patch.openai_clip import openai_clip
from dassl.engine import build_trainer
from runs.config import build_parser, setup_cfg
from tests.numerics import relative_error
from tests.toy_data import make_toy_dataset, toy_opts
from trainers.mmrl import RepresentationCLIP, RepresentationLearner, fusion_at_test
from trainers.mmrlpp import ResidualRepresentationLearner

CLASSNAMES = ["cat", "dog", "sea_lion", "red panda"]
TEMPLATE = "a photo of a {}."
N, R, WIDTH, EMBED = 5, 16, 64, 32  # tokens, rep width; tiny-ViT: width 64 in both towers, embedding 32, 12 blocks
PUBLISHED_LAYERS = [6, 7, 8, 9, 10, 11, 12]
TOL = 1e-4


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_backbone("tiny-ViT")


# -- the released computation, re-written from the release -----------------------------------------------------
def released_tensors(variant, layers, generator):
    """Random values for every trainable tensor of the released model, under its CustomCLIP names."""
    def draw(*shape):
        return torch.randn(*shape, generator=generator) * 0.2
    state = {"representation_learner.compound_rep_tokens": draw(N, R)}
    if variant == "MMRL":
        for i in range(len(layers)):
            for side in ("r2vproj", "r2tproj"):
                state[f"representation_learner.compound_rep_tokens_{side}.{i}.weight"] = draw(WIDTH, R)
                state[f"representation_learner.compound_rep_tokens_{side}.{i}.bias"] = draw(WIDTH)
        state["image_encoder.proj_rep"] = draw(WIDTH, EMBED)
        return state
    for side in ("srra_r2vproj", "srra_r2tproj"):
        state[f"representation_learner.{side}.weight"] = draw(WIDTH, R)
        for i in range(len(layers)):
            state[f"representation_learner.{side}.srra.{i}.A"] = draw(WIDTH, 4)
            state[f"representation_learner.{side}.srra.{i}.B"] = draw(4, R)
            state[f"representation_learner.{side}.srra.{i}.bias"] = draw(WIDTH)
    state["image_encoder.A"], state["image_encoder.B"] = draw(WIDTH, 8), draw(8, EMBED)
    return state


def released_layer_tokens(state, variant, side, i):
    """The release's ``representation_learner()`` output for one layer and side [N, D]."""
    rep = state["representation_learner.compound_rep_tokens"]
    if variant == "MMRL":
        key = f"representation_learner.compound_rep_tokens_{side}.{i}"
        return F.linear(rep, state[key + ".weight"], state[key + ".bias"])
    prefix = f"representation_learner.srra_{side}"
    weight = state[prefix + ".weight"] + state[f"{prefix}.srra.{i}.A"] @ state[f"{prefix}.srra.{i}.B"]
    return F.linear(rep, weight, state[f"{prefix}.srra.{i}.bias"])


def released_blocks(resblocks, x, tokens, layers, beta, text):
    """The release's ResidualAttentionBlock_MMRL(pp) chain on x [L, B, D]: block k (1-based) in ``layers`` inserts
    (first) or renews the N tokens after position 0 before it runs; text blocks from the first such k on use a plain
    causal mask of the current length."""
    counter = 0
    for position, block in enumerate(resblocks):
        k = position + 1
        if k in layers:
            new = tokens[counter].unsqueeze(1).expand(-1, x.shape[1], -1)  # [N, B, D]
            if k == layers[0]:
                x = torch.cat([x[:1], new, x[1:]])
            else:
                previous = x[1:1 + N]
                entering = new if beta is None else beta * new + (1 - beta) * previous
                x = torch.cat([x[:1], entering, x[1 + N:]])
            counter += 1
        mask = block.attn_mask
        if text and k >= layers[0]:
            mask = torch.full((x.shape[0], x.shape[0]), float("-inf")).triu(1)
        h = block.ln_1(x)
        x = x + block.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        x = x + block.mlp(block.ln_2(x))
    return x


def released_heads(clip_model, state, variant, layers, image, beta=None, classnames=CLASSNAMES):
    """The released CustomCLIP.forward, PREC fp32: (logits, logits_rep, logits_fusion, image_features,
    text_features), features L2-normalised."""
    text_tokens = [released_layer_tokens(state, variant, "r2tproj", i) for i in range(len(layers))]
    vision_tokens = [released_layer_tokens(state, variant, "r2vproj", i) for i in range(len(layers))]
    tokens = openai_clip().tokenize([TEMPLATE.format(c.replace("_", " ")) for c in classnames])  # [n, 77]
    x = (clip_model.token_embedding(tokens) + clip_model.positional_embedding).permute(1, 0, 2)  # [77, n, D]
    x = released_blocks(clip_model.transformer.resblocks, x, text_tokens, layers, beta, True).permute(1, 0, 2)
    text = clip_model.ln_final(x)[torch.arange(len(classnames)), tokens.argmax(dim=-1) + N] @ clip_model.text_projection

    v = clip_model.visual
    y = v.conv1(image).flatten(2).transpose(1, 2)  # [B, g*g, D]
    y = torch.cat([v.class_embedding + torch.zeros(y.shape[0], 1, y.shape[-1]), y], dim=1) + v.positional_embedding
    y = released_blocks(v.transformer.resblocks, v.ln_pre(y).permute(1, 0, 2), vision_tokens, layers, beta, False)
    y = y.permute(1, 0, 2)  # [B, 1+N+g*g, D]
    proj_rep = state["image_encoder.proj_rep"] if variant == "MMRL" else (
        v.proj + state["image_encoder.A"] @ state["image_encoder.B"])
    rep = v.ln_post(y[:, 1:1 + N]).mean(dim=1) @ proj_rep
    image_features = F.normalize(v.ln_post(y[:, 0]) @ v.proj, dim=-1)
    rep, text = F.normalize(rep, dim=-1), F.normalize(text, dim=-1)
    logits, logits_rep = 100.0 * image_features @ text.t(), 100.0 * rep @ text.t()
    return logits, logits_rep, 0.7 * logits + 0.3 * logits_rep, image_features, text


def released_loss(clip_model, state, variant, layers, image, label, reg_weight, beta=None, classnames=CLASSNAMES):
    """MMRL_Loss on the released heads and the second (plain) CLIP's features: (total, terms)."""
    logits, logits_rep, _, image_features, text = released_heads(clip_model, state, variant, layers, image, beta,
                                                                 classnames)
    with torch.no_grad():
        clip_image = F.normalize(clip_model.encode_image(image), dim=-1)
        tokens = openai_clip().tokenize([TEMPLATE.format(c.replace("_", " ")) for c in classnames])
        clip_text = F.normalize(clip_model.encode_text(tokens), dim=-1)
    terms = [0.7 * F.cross_entropy(logits, label), 0.3 * F.cross_entropy(logits_rep, label),
             reg_weight * (1 - F.cosine_similarity(image_features, clip_image, dim=1).mean()),
             reg_weight * (1 - F.cosine_similarity(text, clip_text, dim=1).mean())]
    return sum(terms), terms


# -- our learner on the released tensors ----------------------------------------------------------------------------
def learner_for(backbone, variant, layers, beta=0.6, classnames=CLASSNAMES):
    torch.manual_seed(0)
    if variant == "MMRL":
        return RepresentationLearner(backbone, classnames, TEMPLATE, layers, N, R)
    return ResidualRepresentationLearner(backbone, classnames, TEMPLATE, layers, N, R, beta, 8, 4)


def layout(variant):
    from trainers.mmrl import MMRL
    from trainers.mmrlpp import MMRLpp
    return (MMRL if variant == "MMRL" else MMRLpp).RELEASE_LAYOUT


def learner_from_release(backbone, variant, layers, state, beta=0.6):
    learner = learner_for(backbone, variant, layers, beta)
    learner.load_state_dict(layout(variant).to_learner(state, learner.state_dict()))
    return learner


VARIANTS = [("MMRL", PUBLISHED_LAYERS, None), ("MMRL", [3, 5, 6], None),  # a gap: block 4 keeps the tokens' outputs
            ("MMRLpp", PUBLISHED_LAYERS, 0.6), ("MMRLpp", [1, 2, 7], 0.3)]  # from the first block


def test_learners_hold_the_released_tensors_and_start_as_the_release(tiny):
    mmrl = learner_for(tiny, "MMRL", PUBLISHED_LAYERS)
    released = released_tensors("MMRL", PUBLISHED_LAYERS, torch.Generator().manual_seed(0))
    assert {layout("MMRL").release_key(k): v.shape for k, v in mmrl.state_dict().items()} == {
        k: v.shape for k, v in released.items()}
    assert len(released) == 30  # the release's count: tokens, 7 + 7 Linear weight and bias, proj_rep
    weights = [mmrl.compound_rep_tokens_r2vproj[i].weight for i in range(7)]
    assert all(torch.equal(w, weights[0]) for w in weights)  # clones of one fresh Linear
    assert 0.5 < mmrl.proj_rep.std().item() / WIDTH ** -0.5 < 1.5  # new and random, not CLIP's proj
    assert abs(mmrl.compound_rep_tokens.std().item() - 0.02) < 0.01
    pp = learner_for(tiny, "MMRLpp", PUBLISHED_LAYERS)
    released = released_tensors("MMRLpp", PUBLISHED_LAYERS, torch.Generator().manual_seed(0))
    assert {layout("MMRLpp").release_key(k): v.shape for k, v in pp.state_dict().items()} == {
        k: v.shape for k, v in released.items()}
    assert not pp.B.any() and all(not a.B.any() for a in pp.srra_r2tproj.srra)  # residuals start at zero
    assert torch.equal(pp.rep_projection(tiny.image_encoder.proj), tiny.image_encoder.proj)  # starts at CLIP's proj
    assert all(torch.equal(a.bias, pp.srra_r2vproj.srra[0].bias) for a in pp.srra_r2vproj.srra)
    assert 0 < pp.A.abs().max() <= math.sqrt(6 / ((1 + 5) * 8))  # Kaiming-uniform(a = sqrt 5) bound, fan_in 8


@pytest.mark.parametrize("straightforward", [False, True])
@pytest.mark.parametrize("variant,layers,beta", VARIANTS)
def test_released_weights_give_the_released_logits_of_both_heads(tiny, variant, layers, beta, straightforward):
    state = released_tensors(variant, layers, torch.Generator().manual_seed(1))
    learner = learner_from_release(tiny, variant, layers, state, beta)
    model = RepresentationCLIP(tiny, learner, 0.7, straightforward=straightforward, text_chunk_classes=3).eval()
    image = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits, logits_rep, image_features, text = model.heads(image)
        expected = released_heads(tiny.model, state, variant, layers, image, beta)
        fused = model(image)
    assert logits.shape == (3, len(CLASSNAMES))
    for ours, theirs in zip((logits, logits_rep, fused, image_features, text), expected):
        assert (ours - theirs).abs().max() <= TOL
    plain = 100.0 * F.normalize(tiny.model.encode_image(image), dim=-1)
    assert (expected[0] - plain @ expected[4].t()).abs().max() > 1e-2  # the tokens reach the CLS head



# -- through train.py --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_toy_dataset(str(root))
    return root


def toy_trainer(root, trainer="MMRL", *opts):
    argv = ["--root", str(root), "--trainer", trainer, "--output-dir", str(root / "out"),
            "--config-file", f"configs/trainers/{trainer}/vit_b16.yaml"]
    argv += toy_opts(str(root)) + [f"TRAINER.{trainer}.PREC", "fp32", "MODEL.INIT_SEED", "0",
                                   f"TRAINER.{trainer}.REP_DIM", str(R), *opts]
    if trainer == "MMRLpp":
        argv += ["TRAINER.MMRLpp.PROJ_LORA_DIM", "8", "TRAINER.MMRLpp.BETA", "0.6"]
    built = build_trainer(setup_cfg(build_parser().parse_args(argv)))
    built.batch_idx, built.num_batches = 0, 10 ** 6  # forward_backward outside an epoch: no LR step
    return built


@pytest.mark.parametrize("variant", ["MMRL", "MMRLpp"])
def test_one_training_steps_loss_terms_and_gradients_match_the_release(tiny, data_root, variant):
    reg_weight = 0.5
    trainer = toy_trainer(data_root, variant, f"TRAINER.{variant}.REG_WEIGHT", str(reg_weight))
    classes = trainer.dm.dataset.classnames
    beta = 0.6 if variant == "MMRLpp" else None
    state = released_tensors(variant, PUBLISHED_LAYERS, torch.Generator().manual_seed(3))
    learner = trainer.model.prompt_learner
    learner.load_state_dict(layout(variant).to_learner(state, learner.state_dict()))
    image = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    label = torch.tensor([0, 3, 1, 1])
    loss, fused = trainer.compute_loss(image, label)
    loss.backward()
    released = {k: v.clone().requires_grad_(True) for k, v in state.items()}
    expected, terms = released_loss(tiny.model, released, variant, PUBLISHED_LAYERS, image, label, reg_weight, beta,
                                    classes)
    expected.backward()
    ours = list(trainer.last_loss_terms.values())
    assert list(trainer.last_loss_terms) == ["loss_ce", "loss_ce_rep", "loss_reg_image", "loss_reg_text"]
    for mine, theirs in zip(ours, terms):
        assert abs(mine.item() - theirs.item()) <= 1e-3 * abs(theirs.item()) + 1e-7
    assert terms[2].item() > 0 and terms[3].item() > 0
    assert abs(loss.item() - expected.item()) <= 1e-3 * abs(expected.item())
    grads = {layout(variant).release_key(k): p.grad for k, p in learner.named_parameters()}
    assert set(grads) == set(state)
    for key, grad in grads.items():
        assert released[key].grad.norm() > 0, key
        assert relative_error(grad, released[key].grad) <= 1e-3, key
    with torch.no_grad():
        expected_fused = released_heads(tiny.model, state, variant, PUBLISHED_LAYERS, image, beta, classes)[2]
    assert (fused.detach() - expected_fused).abs().max() <= TOL


def test_test_head_follows_the_release_per_task():
    assert fusion_at_test("B2N", "base", "Caltech101") and not fusion_at_test("B2N", "new", "Caltech101")
    assert not fusion_at_test("B2N", "all", "Caltech101")
    assert fusion_at_test("FS", "all", "EuroSAT")
    assert fusion_at_test("CD", "all", "ImageNet") and not fusion_at_test("CD", "all", "ImageNetV2")


@pytest.mark.parametrize("subsample,fused", [("base", True), ("new", False)])
def test_trainers_test_reads_the_head_of_its_task(data_root, subsample, fused):
    trainer = toy_trainer(data_root, "MMRL", "DATASET.SUBSAMPLE_CLASSES", subsample)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    trainer.set_model_mode("eval")
    with torch.no_grad(), trainer.evaluation_scope():
        logits, logits_rep, _, _ = trainer.model.heads(images)
        expected = trainer.model.fuse(logits, logits_rep) if fused else logits
        assert torch.equal(trainer.model_inference(images), expected)
    assert (logits - logits_rep).abs().max() > 1e-3  # the two heads differ


def cfg_for(trainer, dataset_file, *opts):
    argv = ["--trainer", trainer, "--config-file", f"configs/trainers/{trainer}/vit_b16.yaml",
            "--dataset-config-file", f"configs/datasets/{dataset_file}.yaml", *opts]
    return setup_cfg(build_parser().parse_args(argv))


def test_per_dataset_settings_apply_after_the_yaml_and_before_the_options():
    cfg = cfg_for("MMRL", "eurosat")
    assert (cfg.TRAINER.MMRL.REP_DIM, cfg.TRAINER.MMRL.REG_WEIGHT) == (2048, 0.01)
    cfg = cfg_for("MMRL", "eurosat", "TRAINER.MMRL.REP_DIM", "512")  # the options win (the release's order)
    assert (cfg.TRAINER.MMRL.REP_DIM, cfg.TRAINER.MMRL.REG_WEIGHT) == (512, 0.01)
    assert cfg_for("MMRL", "dtd").TRAINER.MMRL.REG_WEIGHT == 6.0
    assert cfg_for("MMRL", "image_folder").TRAINER.MMRL.REG_WEIGHT == 1.0  # not in the table: the YAML's value
    pp = cfg_for("MMRLpp", "caltech101").TRAINER.MMRLpp
    assert (pp.BETA, pp.REG_WEIGHT) == (0.6, 3.0)
    pp = cfg_for("MMRLpp", "caltech101", "TRAINER.MMRLpp.TASK", "CD").TRAINER.MMRLpp
    assert (pp.BETA, pp.REG_WEIGHT) == (0.6, 1.0)  # cross-dataset: BETA alone
    assert cfg_for("MMRLpp", "imagenet_a", "TRAINER.MMRLpp.TASK", "CD").TRAINER.MMRLpp.BETA == 0.8
    assert cfg_for("CoOp", "eurosat").TRAINER.COOP.N_CTX == 16  # other trainers: untouched


@pytest.mark.parametrize("opts,message", [
    (["TRAINER.MMRL.TASK", "XD"], "TRAINER.MMRL.TASK is 'XD': use B2N"),
    (["TRAINER.MMRL.ALPHA", "1.5"], "TRAINER.MMRL.ALPHA = 1.5 is out of range"),
    (["TRAINER.MMRL.REP_LAYERS", "[]"], "TRAINER.MMRL.REP_LAYERS is []: give increasing blocks from 1"),
    (["TRAINER.MMRL.REP_LAYERS", "[7, 6]"], "REP_LAYERS is [7, 6]"),
    (["TRAINER.MMRL.REP_LAYERS", "[6, 13]"], "in 1..12"),
    (["TRAINER.MMRL.REP_LAYERS", "[6.5, 7]"], "TRAINER.MMRL.REP_LAYERS is [6.5, 7]: give increasing blocks from 1"),
    (["TRAINER.MMRL.REP_LAYERS", "['a']"], "TRAINER.MMRL.REP_LAYERS is ['a']: give increasing blocks from 1"),
])
def test_bad_settings_are_refused_in_one_line(data_root, opts, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        toy_trainer(data_root, "MMRL", *opts)


# -- checkpoints, both ways ------------------------------------------------------------------------------------------
def released_checkpoint(trainer, variant, state, path):
    """The release's whole-model save: its trainables, the frozen CLIP (here: a few keys of noise the load must not
    read) and the class-dependent ``prompt_embeddings``."""
    whole = {**state, "image_encoder.proj": torch.randn(WIDTH, EMBED), "image_encoder.conv1.weight": torch.randn(1),
             "text_encoder.transformer.resblocks.0.attn.in_proj_weight": torch.randn(1),
             "prompt_embeddings": torch.zeros(len(trainer.dm.dataset.classnames), 77, WIDTH)}
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": whole, "epoch": 10, "optimizer": {}, "scheduler": {}}, path)


@pytest.mark.parametrize("variant", ["MMRL", "MMRLpp"])
def test_released_checkpoint_evaluates_as_the_release_and_ours_exports_to_it(tiny, data_root, tmp_path, variant):
    from scripts import export_checkpoint
    from dassl.engine.run_dir import write_result
    trainer = toy_trainer(data_root, variant, "DATASET.SUBSAMPLE_CLASSES", "base")
    beta = 0.6 if variant == "MMRLpp" else None
    state = released_tensors(variant, PUBLISHED_LAYERS, torch.Generator().manual_seed(8))
    released_checkpoint(trainer, variant, state, tmp_path / "release" / "MultiModalRepresentationLearner" /
                        "model.pth.tar-10")
    trainer.load_model(str(tmp_path / "release"), epoch=10)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    classes = trainer.dm.dataset.classnames
    with torch.no_grad():
        expected = released_heads(tiny.model, state, variant, PUBLISHED_LAYERS, images, beta, classes)[2]  # fusion
    trainer.set_model_mode("eval")
    with torch.no_grad(), trainer.evaluation_scope():
        assert (trainer.model_inference(images) - expected).abs().max() <= TOL

    run = tmp_path / "run"
    trainer.save_model(9, str(run))
    write_result(str(run), {"mode": "train", "metrics": {}, "deployed": "last_step"})
    path = export_checkpoint.export(variant, str(run), str(tmp_path / "export"))
    exported = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    assert set(exported) == set(state) and all(torch.equal(exported[k], v) for k, v in state.items())
    fresh = toy_trainer(data_root, variant, "DATASET.SUBSAMPLE_CLASSES", "base", "MODEL.INIT_SEED", "5")
    fresh.load_model(str(tmp_path / "export"), epoch=10)
    fresh.set_model_mode("eval")
    with torch.no_grad(), fresh.evaluation_scope():
        assert (fresh.model_inference(images) - expected).abs().max() <= TOL


def test_class_sentences_are_the_releases():
    """yunncheng/MMRL trainers/mmrl.py L21-37, transcribed."""
    from trainers.mmrl import MMRL_TEMPLATES
    photo = "a photo of a {}."
    assert MMRL_TEMPLATES == {
        "OxfordPets": "a photo of a {}, a type of pet.", "OxfordFlowers": "a photo of a {}, a type of flower.",
        "FGVCAircraft": "a photo of a {}, a type of aircraft.", "DescribableTextures": "{} texture.",
        "EuroSAT": "a centered satellite photo of {}.", "StanfordCars": photo,
        "Food101": "a photo of {}, a type of food.", "SUN397": photo, "Caltech101": photo,
        "UCF101": "a photo of a person doing {}.", "ImageNet": photo, "ImageNetSketch": photo, "ImageNetV2": photo,
        "ImageNetA": photo, "ImageNetR": photo}


def test_train_py_refuses_a_bad_task_in_one_line_with_exit_status_2(data_root, tmp_path, capsys):
    from runs.run import cli
    out = tmp_path / "run"
    argv = ["--root", str(data_root), "--seed", "1", "--trainer", "MMRL", "--output-dir", str(out),
            "--config-file", "configs/trainers/MMRL/vit_b16.yaml", *toy_opts(str(data_root), epochs=1),
            "TRAINER.MMRL.TASK", "XD"]
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TRAINER.MMRL.TASK is 'XD': use B2N" in err[0], err
    assert not out.exists()


def test_each_evaluation_reads_the_current_tokens(data_root):
    """The release keeps its first evaluation's text features and tokens for good; here an evaluation after the
    weights change (more training, a loaded checkpoint) reads the new ones."""
    trainer = toy_trainer(data_root, "MMRL", "DATASET.SUBSAMPLE_CLASSES", "base")
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(11))
    trainer.set_model_mode("eval")
    with torch.no_grad(), trainer.evaluation_scope():
        before = trainer.model_inference(images)
        assert trainer.model._text_cache is not None  # cached within one evaluation
    with torch.no_grad():
        trainer.model.prompt_learner.compound_rep_tokens.add_(0.5)
    with torch.no_grad(), trainer.evaluation_scope():
        after = trainer.model_inference(images)
        logits, logits_rep, _, _ = trainer.model.heads(images)
    assert (after - before).abs().max() > 1e-3
    assert torch.equal(after, trainer.model.fuse(logits, logits_rep))


@pytest.mark.parametrize("beta", ["1.5", "-0.1"])
def test_mmrlpp_beta_outside_0_to_1_is_refused_in_one_line(beta):
    from trainers.mmrlpp import MMRLpp
    cfg = setup_cfg(build_parser().parse_args(["--trainer", "MMRLpp", "--config-file",
                                               "configs/trainers/MMRLpp/vit_b16.yaml", "TRAINER.MMRLpp.BETA", beta]))
    with pytest.raises(ValueError, match=rf"^TRAINER\.MMRLpp\.BETA = {beta} is out of range: use a number in 0\.\.1 "
                                         r"\(weight of the new tokens"):
        MMRLpp.__new__(MMRLpp).check_cfg(cfg)


def test_the_frozen_image_target_follows_model_straightforward(data_root):
    """With MODEL.STRAIGHTFORWARD the frozen CLIP's image features (the image regulariser's target) run the released
    computation too, as every other encoder call of the step does."""
    trainer = toy_trainer(data_root, "MMRL", "MODEL.STRAIGHTFORWARD", "True")
    encoder, asked = trainer.model.image_encoder, []
    plain_forward = encoder.forward

    def recording_forward(image, shallow=None, deep=None, straightforward=False, branch=None):
        asked.append(straightforward)
        return plain_forward(image, shallow, deep, straightforward, branch)
    encoder.forward = recording_forward
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    trainer.loss_terms(images, torch.tensor([0, 1]))
    assert asked == [True]


@pytest.mark.parametrize("variant", ["MMRL", "MMRLpp"])
def test_text_tokens_keep_the_deep_prompts_contract(tiny, variant):
    """Shared deep prompts promise one [N, D] for every sequence and no need of a probe (what the shared-prefix path
    relies on); MMRL++'s tokens mix in each sequence's own outputs, so they are per-sequence, yet the same for every
    class chunk."""
    deep = learner_for(tiny, variant, [3, 5, 6]).text_inputs()[2]
    if deep.shared:
        with torch.no_grad():
            assert all(deep.replace(layer, None) is None or deep.replace(layer, None).shape == (N, WIDTH)
                       for layer in range(12))
    assert deep.shared == (variant == "MMRL")
    assert deep.for_classes(slice(0, 2)) is deep

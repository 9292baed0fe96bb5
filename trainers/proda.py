"""ProDA (Lu et al., CVPR 2022): a set of learned prompts whose class text features are modelled as a Gaussian.

N_PROMPT context sets ``ctx`` [K, b, D] (b = N_CTX tokens) are each placed around every class name: the first K//4
put the class name first ("front"), the next K//4 in the middle, the rest at the end (K = 1: end). Each prompt's class
text feature is L2-normalised; a class is represented by their mean over prompts, NOT renormalised.

* Training step: PROMPT_BATCH = P of the prompts (a fresh permutation of the K prompts every K / P steps, consecutive
  chunks of it in between). With t_cp the normalised feature of class c under prompt p, t̄_c its mean over the P
  prompts, u_cp = t_cp − t̄_c, z the normalised image feature, y its label and s = exp(logit_scale),

      logit[j] = s · z·t̄_j + ½ s² Σ_e z_e² Σ_p (u_yp,e − u_jp,e)² / (P + 1)

  (the second term is skipped with DATALOADER.MULTILABEL); the loss is their cross-entropy, plus LOSS_M_WEIGHT times
  the prompt-diversity term (mean |cosine| between the K context sets encoded alone, "<SOS> ctx . <EOT>").
* Evaluation: logits s · z · t̄ᵀ with t̄ the mean over all K prompts.

Differences from the released code (LAMDASZ-ML/BMIP ``trainers/proda.py``) are listed in docs/BMIP.md ("ProDA").
"""
import hashlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from clip_patch.chunked import encode_text
from dassl.config import check_range, register_config
from dassl.engine import TRAINER_REGISTRY

from .base import CLIPPromptTrainer, PromptedCLIP
from .release_formats import ReleaseLayout, prompt_learner_groups

FRONT, MIDDLE, END = 0, 1, 2  # where a prompt puts the class name (the release's ``pos`` values)


@register_config
def add_proda_config(cfg):
    cfg.TRAINER.ProDA = CN()
    cfg.TRAINER.ProDA.N_CTX = 16  # context tokens per prompt (b)
    cfg.TRAINER.ProDA.N_PROMPT = 32  # learned prompts (K): K//4 class-name-first, K//4 middle, the rest at the end
    cfg.TRAINER.ProDA.PREC = "fp16"  # frozen-encoder compute: fp16 | fp32 | amp | bf16 (fp32 on CPU)
    cfg.TRAINER.ProDA.PROMPT_BATCH = 0  # prompts per training step; 0 = DATALOADER.TRAIN_X.BATCH_SIZE (the release)
    cfg.TRAINER.ProDA.LOSS_M_WEIGHT = 0.0  # weight of the prompt-diversity term (0 = the release: never added)
    cfg.TRAINER.ProDA.CLEAN_CLASSNAMES = False  # True: "_" -> " " in class names (the release prompts the raw names)
    cfg.DATALOADER.MULTILABEL = False  # ProDA: True drops the Gaussian term from the training logits
    cfg.TRAIN.STOPPING_COUNT = 3  # inert, kept so the published ProDA config merges (patience is PATIENT_COUNT)
    cfg.TEST.NAME = ""  # inert, kept so the published ProDA config merges


def prompt_positions(n_prompt):
    """Where each of the K prompts puts the class name: K//4 FRONT, K//4 MIDDLE, the rest END (K = 1: END)."""
    if n_prompt == 1:
        return torch.tensor([END])
    quarter = n_prompt // 4
    return torch.tensor([FRONT] * quarter + [MIDDLE] * quarter + [END] * (n_prompt - 2 * quarter))


def arrangement_indices(name_lens, n_ctx, length):
    """[3, n_cls, L] gather indices turning the END layout [SOS, ctx, name, rest] into each arrangement.

    MIDDLE: [SOS, ctx[:b//2], name, ctx[b//2:], rest]; FRONT: [SOS, name, ctx, rest].
    """
    half = n_ctx // 2
    rows = {FRONT: [], MIDDLE: [], END: []}
    for k in name_lens:
        ctx, name, rest = list(range(1, 1 + n_ctx)), list(range(1 + n_ctx, 1 + n_ctx + k)), \
            list(range(1 + n_ctx + k, length))
        rows[END].append([0] + ctx + name + rest)
        rows[MIDDLE].append([0] + ctx[:half] + name + ctx[half:] + rest)
        rows[FRONT].append([0] + name + ctx + rest)
    return torch.tensor([rows[FRONT], rows[MIDDLE], rows[END]])


class ProDAPromptLearner(nn.Module):
    """The K learned context sets ``ctx`` [K, b, D_t], the only trainable tensor, and the frozen prompt parts."""

    CONTEXT_SETS = "prompt"  # ctx's leading axis is the learned prompt (analysis.interpret_prompt)

    def __init__(self, backbone, classnames, n_ctx, n_prompt, clean_classnames):
        super().__init__()
        text_encoder = backbone.require_text_encoder("ProDA")
        device = text_encoder.device
        ctx = torch.empty(n_prompt, n_ctx, text_encoder.width)
        nn.init.normal_(ctx, std=0.02)
        self.ctx = nn.Parameter(ctx)  # [K, b, D]
        names = [name.replace("_", " ") for name in classnames] if clean_classnames else list(classnames)
        prefix = " ".join(["X"] * n_ctx)
        tokens = backbone.tokenize([f"{prefix} {name}." for name in names]).to(device)  # [n_cls, L]
        nc_tokens = backbone.tokenize([f"{prefix}."]).to(device)  # [1, L]: the context alone
        name_lens = [len(backbone.token_ids(name)) for name in names]
        with torch.no_grad():
            embedding, nc_embedding = text_encoder.embed(tokens), text_encoder.embed(nc_tokens)  # [n, L, D]
        self.n_ctx = n_ctx
        # Class-dependent and derived tensors are not saved: a trained ctx evaluates on any class set.
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("token_prefix", embedding[:, :1].clone(), persistent=False)  # SOS [n_cls, 1, D]
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:].clone(), persistent=False)  # [n_cls, *, D]
        self.register_buffer("nc_tokens", nc_tokens, persistent=False)
        self.register_buffer("nc_token_prefix", nc_embedding[:, :1].clone(), persistent=False)  # [1, 1, D]
        self.register_buffer("nc_token_suffix", nc_embedding[:, 1 + n_ctx:].clone(), persistent=False)  # [1, *, D]
        self.register_buffer("positions", prompt_positions(n_prompt).to(device), persistent=False)  # [K]
        self.register_buffer("arrangements", arrangement_indices(name_lens, n_ctx, tokens.shape[1]).to(device),
                             persistent=False)  # [3, n_cls, L]

    @property
    def num_prompts(self):
        return self.ctx.shape[0]

    def prompt_embeddings(self, k):
        """Prompt k's class prompts: embeddings [n_cls, L, D] (its arrangement) and tokens [n_cls, L]."""
        n_cls = self.tokens.shape[0]
        ctx = self.ctx[k].to(self.token_prefix.dtype).expand(n_cls, -1, -1)  # [n_cls, b, D]
        end = torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)  # [n_cls, L, D]
        index = self.arrangements[self.positions[k]]  # [n_cls, L]
        return end.gather(1, index.unsqueeze(-1).expand(-1, -1, end.shape[-1])), self.tokens

    def context_embeddings(self):
        """Every context set alone ("<SOS> ctx . <EOT>"): embeddings [K, L, D] and tokens [K, L]."""
        K = self.num_prompts
        ctx = self.ctx.to(self.nc_token_prefix.dtype)  # [K, b, D]
        embeddings = torch.cat([self.nc_token_prefix.expand(K, -1, -1), ctx, self.nc_token_suffix.expand(K, -1, -1)],
                               dim=1)
        return embeddings, self.nc_tokens.expand(K, -1)

    def vision_inputs(self):
        return None, None  # text prompts only


class ProDACLIP(PromptedCLIP):
    """Frozen CLIP with ProDA's prompt set: class features are means over prompts; training adds the Gaussian term."""

    def prompt_features(self, indices):
        """L2-normalised features of the prompts ``indices`` (P ints) for every class: [n_cls, P, E].

        One text-encoder call per prompt: all classes of one END prompt share the prefix "<SOS> ctx", which the
        fast path then encodes once.
        """
        features = []
        for k in indices:
            embeddings, tokens = self.prompt_learner.prompt_embeddings(k)
            f = encode_text(self.text_encoder, embeddings, tokens, None, self.straightforward,
                            self.text_chunk_classes)  # [n_cls, E]
            features.append(f / f.norm(dim=-1, keepdim=True))
        return torch.stack(features, dim=1)  # [n_cls, P, E]

    def text_features(self):
        """Evaluation's class features [n_cls, E]: the mean over all K prompts of the normalised features (what the
        release's ``set_classifier`` computes), not renormalised; cached within one evaluation."""
        cacheable = self._caching and not torch.is_grad_enabled() and not self.straightforward
        if cacheable and self._text_cache is not None:
            return self._text_cache
        features = self.prompt_features(range(self.prompt_learner.num_prompts)).mean(dim=1)  # [n_cls, E]
        if cacheable:
            self._text_cache = features
        return features

    def training_logits(self, image, label, indices, multilabel):
        """Training logits [B, n_cls] on the prompts ``indices`` (P ints), with ProDA's Gaussian term unless
        multilabel."""
        image_features = self.image_features(image)  # [B, E]
        features = self.prompt_features(indices)  # [n_cls, P, E]
        mean = features.mean(dim=1)  # [n_cls, E]
        scale = self.logit_scale.exp()
        logits = scale * image_features @ mean.t()  # [B, n_cls]
        if multilabel:
            return logits
        centred = features - mean.unsqueeze(1)  # [n_cls, P, E]
        gap = centred[label].unsqueeze(1) - centred.unsqueeze(0)  # [B, n_cls, P, E]: (t_y - t_j), centred
        spread = torch.einsum("be,bjpe->bj", image_features ** 2, gap ** 2) / (features.shape[1] + 1)  # [B, n_cls]
        return logits + 0.5 * scale ** 2 * spread

    def diversity_loss(self):
        """Mean |cosine| between the K context sets encoded alone (the release's ``loss_m``)."""
        embeddings, tokens = self.prompt_learner.context_embeddings()
        f = self.text_encoder(embeddings, tokens, None, self.straightforward)  # [K, E]
        f = f / f.norm(dim=-1, keepdim=True)
        cosine = f @ f.t()  # [K, K]
        off_diagonal = ~torch.eye(f.shape[0], dtype=torch.bool, device=f.device)
        return cosine[off_diagonal].abs().mean()


def prompt_batch(cfg):
    """Prompts per training step: TRAINER.ProDA.PROMPT_BATCH, or the image batch size when it is 0 (the release)."""
    return cfg.TRAINER.ProDA.PROMPT_BATCH or cfg.DATALOADER.TRAIN_X.BATCH_SIZE


def sampled_prompts(n_prompt, batch, seed, step):
    """The prompts (``batch`` ints) of training step ``step``: chunk ``step % (K / batch)`` of a permutation of the K
    prompts drawn afresh every K / batch steps, from a CPU generator seeded by (seed, cycle) alone (the same after a
    resume; host-side indices, whatever the model's device)."""
    cycles = n_prompt // batch
    cycle, chunk = divmod(step, cycles)
    key = hashlib.sha256(f"ProDA prompts {seed} {cycle}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(key[:8], "big"))
    permutation = torch.randperm(n_prompt, generator=generator, device="cpu").tolist()  # K ints
    return permutation[chunk * batch: (chunk + 1) * batch]


@TRAINER_REGISTRY.register()
class ProDA(CLIPPromptTrainer):
    DISPLAY_RANK = 75  # place in result tables and benchmarks (trainers/display.py)
    CFG_NODE = "ProDA"
    CHECKPOINT_NAME = "prompt_learner"
    # Release: trainers/proda.py registers its whole CustomCLIP as "prompt_learner"; ctx is prompt_learner.ctx. The
    # context-alone prompts' frozen buffers (nc_token_prefix/suffix) are rebuilt here from the tokenizer.
    RELEASE_LAYOUT = ReleaseLayout(groups=prompt_learner_groups("ctx"), trained=("prompt_learner", "ProDA"),
                                   dead=("nc_token_prefix", "nc_token_suffix"))

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        m = cfg.TRAINER.ProDA
        check_range("TRAINER.ProDA.N_CTX", m.N_CTX, 1, meaning="context tokens per prompt")
        check_range("TRAINER.ProDA.N_PROMPT", m.N_PROMPT, 1, meaning="learned prompts")
        check_range("TRAINER.ProDA.PROMPT_BATCH", m.PROMPT_BATCH, 0,
                    meaning="prompts per training step; 0 = DATALOADER.TRAIN_X.BATCH_SIZE")
        check_range("TRAINER.ProDA.LOSS_M_WEIGHT", m.LOSS_M_WEIGHT, 0.0, meaning="weight of the diversity term")
        batch = prompt_batch(cfg)
        if m.N_PROMPT % batch:
            source = "TRAINER.ProDA.PROMPT_BATCH" if m.PROMPT_BATCH else \
                "DATALOADER.TRAIN_X.BATCH_SIZE (the prompt batch while TRAINER.ProDA.PROMPT_BATCH is 0)"
            raise ValueError(f"TRAINER.ProDA.N_PROMPT = {m.N_PROMPT} is not a multiple of the prompt batch {batch} "
                             f"from {source}: set TRAINER.ProDA.PROMPT_BATCH to a divisor of N_PROMPT")

    def build_prompt_learner(self, cfg, classnames, backbone):
        m = self.method_cfg
        return ProDAPromptLearner(backbone, classnames, m.N_CTX, m.N_PROMPT, m.CLEAN_CLASSNAMES)

    def build_clip_model(self, backbone, learner):
        return ProDACLIP(backbone, learner, **self.model_options())

    def training_prompts(self):
        """The prompts (PROMPT_BATCH ints) of the current step (a function of SEED and the global step)."""
        step = self.epoch * self.num_batches + self.batch_idx
        return sampled_prompts(self.method_cfg.N_PROMPT, prompt_batch(self.cfg), max(self.cfg.SEED, 0), step)

    def compute_loss(self, image, label):
        logits = self.model.training_logits(image, label, self.training_prompts(), self.cfg.DATALOADER.MULTILABEL)
        loss = F.cross_entropy(logits.float(), label)
        weight = self.method_cfg.LOSS_M_WEIGHT
        if weight:
            loss = loss + weight * self.model.diversity_loss().float()
        return loss, logits

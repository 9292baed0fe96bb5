"""PromptSRC_BMIP (the released BMIP code's second trainer): BMIP's prompts trained the PromptSRC way.

The prompt learner is BMIP's (``trainers/bmip.py``: MaPLe-coupled shallow prompts, deep text and vision prompts
blended by attention gates); training is PromptSRC's (``trainers/promptsrc.py``: the self-regulating loss and
Gaussian prompt aggregation). Config keys are read as the release reads them (node ``TRAINER.PROMPTSRC``, plus
``SHARE.*``):

* ``N_CTX_TEXT`` is the prompt length of BOTH modalities; ``N_CTX_VISION`` is ignored (warned when it differs).
* ``PROMPT_DEPTH`` (9 unless set; no published config sets it) is BMIP's depth J; ``PROMPT_DEPTH_VISION/TEXT`` are
  ignored (warned when they differ), so the published "depth 3" cross-dataset config runs at depth 9, as it did.
* ``BMIP_MODE`` selects BMIP's gates: ``reference`` (the release's, default) or ``per_sample`` (docs/BMIP.md).

The teacher averages over the BMIP release's own template list, OpenAI's 80 ImageNet templates in OpenAI's order
(its ``trainers/promptsrc_bmip.py`` imports them from its ``trainers/imagenet_templates.py``), not PromptSRC's 60.
"""
import warnings

from dassl.config import check_range
from dassl.engine import TRAINER_REGISTRY

from .bmip import MODES, BMIPPromptLearner, check_released_gates
from .imagenet_templates import OPENAI_IMAGENET_TEMPLATES
from .prompting import check_coupled_depth
from .promptsrc import SelfRegulatingTrainer
from .release_formats import BMIP_DEAD, BMIP_GROUPS, ReleaseLayout, bmip_export_refusal


@TRAINER_REGISTRY.register()
class PromptSRC_BMIP(SelfRegulatingTrainer):
    DISPLAY_RANK = 70  # place in result tables and benchmarks (trainers/display.py)
    TEACHER_TEMPLATES = OPENAI_IMAGENET_TEMPLATES  # the BMIP release's 80
    # Release: BMIP code trainers/promptsrc_bmip.py: BMIP's prompts, saved under VLPromptLearner; its
    # prompt_learner.ctx duplicates ctx_t and never reaches the loss.
    RELEASE_LAYOUT = ReleaseLayout(groups=BMIP_GROUPS, trained=("prompt_learner", "VPT", "learnable_linear"),
                                   dead=BMIP_DEAD + ("ZS_image_encoder", "prompt_learner.ctx"),
                                   export_refusal=bmip_export_refusal)

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        m = cfg.TRAINER.PROMPTSRC
        if m.BMIP_MODE not in MODES:
            raise ValueError(f"TRAINER.PROMPTSRC.BMIP_MODE must be one of {MODES}, got '{m.BMIP_MODE}'")
        check_range("TRAINER.PROMPTSRC.PROMPT_DEPTH", m.PROMPT_DEPTH, 1,
                    meaning="BMIP's layers with prompts, both modalities; 1 = shallow only")
        ignored = [key for key in ("PROMPT_DEPTH_VISION", "PROMPT_DEPTH_TEXT") if m[key] != m.PROMPT_DEPTH]
        if ignored:
            warnings.warn(f"PromptSRC_BMIP ignores TRAINER.PROMPTSRC.{'/'.join(ignored)} (as the release does): both "
                          f"encoders get prompts at depth TRAINER.PROMPTSRC.PROMPT_DEPTH = {m.PROMPT_DEPTH}")
        if m.N_CTX_VISION != m.N_CTX_TEXT:
            warnings.warn(f"PromptSRC_BMIP ignores TRAINER.PROMPTSRC.N_CTX_VISION = {m.N_CTX_VISION} (as the release "
                          f"does): both modalities get N_CTX_TEXT = {m.N_CTX_TEXT} prompt tokens")

    def check_backbone_depths(self, cfg, text_layers, vision_layers):
        check_coupled_depth(cfg.TRAINER.PROMPTSRC.PROMPT_DEPTH, text_layers, vision_layers,
                            "TRAINER.PROMPTSRC.PROMPT_DEPTH")

    def build_prompt_learner(self, cfg, classnames, backbone):
        m = self.method_cfg
        return BMIPPromptLearner(backbone, classnames, m.N_CTX_TEXT, m.CTX_INIT, m.PROMPT_DEPTH, m.BMIP_MODE,
                                 cfg.SHARE.SHARE_PARAMETER_TEXT, cfg.SHARE.SHARE_PARAMETER_VISUAL,
                                 method="PromptSRC_BMIP", depth_key="TRAINER.PROMPTSRC.PROMPT_DEPTH")

    def convert_checkpoint(self, state_dict):
        check_released_gates(state_dict, self.method_cfg.BMIP_MODE, "TRAINER.PROMPTSRC.BMIP_MODE", self.cfg)
        return super().convert_checkpoint(state_dict)

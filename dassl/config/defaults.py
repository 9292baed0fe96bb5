"""Dassl 0.6.3 default configuration: the 135 keys every ecosystem YAML is merged into."""

from yacs.config import CfgNode as CN

_C = CN()

_C.VERSION = 1
# Where log.txt, tensorboard/ and the <model_name>/ checkpoint folders go
_C.OUTPUT_DIR = "./output"
# Folder of an earlier run to resume from ("" = probe OUTPUT_DIR)
_C.RESUME = ""
# Seed for random/numpy/torch; negative = do not seed
_C.SEED = -1
_C.USE_CUDA = True
# Print the dataset table and "Loading …" lines
_C.VERBOSE = True

###########################
# Input
###########################
_C.INPUT = CN()
_C.INPUT.SIZE = (224, 224)
# Resize interpolation: bilinear | bicubic | nearest
_C.INPUT.INTERPOLATION = "bilinear"
# Augmentation names; build_transform fixes their order
_C.INPUT.TRANSFORMS = ()
# True: no transform at all (loaders yield PIL images)
_C.INPUT.NO_TRANSFORM = False
# Normalization statistics (ImageNet); CLIP configs override them
_C.INPUT.PIXEL_MEAN = [0.485, 0.456, 0.406]
_C.INPUT.PIXEL_STD = [0.229, 0.224, 0.225]
# random_crop padding (pixels)
_C.INPUT.CROP_PADDING = 4
# random_resized_crop area range
_C.INPUT.RRCROP_SCALE = (0.08, 1.0)
# cutout: number of holes and their side length
_C.INPUT.CUTOUT_N = 1
_C.INPUT.CUTOUT_LEN = 16
# gaussian_noise: mean and std
_C.INPUT.GN_MEAN = 0.0
_C.INPUT.GN_STD = 0.15
# randaugment: number of ops (N) and magnitude (M)
_C.INPUT.RANDAUGMENT_N = 2
_C.INPUT.RANDAUGMENT_M = 10
# colorjitter: brightness, contrast, saturation, hue
_C.INPUT.COLORJITTER_B = 0.4
_C.INPUT.COLORJITTER_C = 0.4
_C.INPUT.COLORJITTER_S = 0.4
_C.INPUT.COLORJITTER_H = 0.1
# randomgrayscale probability
_C.INPUT.RGS_P = 0.2
# gaussian_blur:
_C.INPUT.GB_P = 0.5  # probability
_C.INPUT.GB_K = 21  # kernel size (odd)

###########################
# Dataset
###########################
_C.DATASET = CN()
# Folder holding the dataset folders ($DATA)
_C.DATASET.ROOT = ""
_C.DATASET.NAME = ""
# Domain names (multi-domain datasets only)
_C.DATASET.SOURCE_DOMAINS = ()
_C.DATASET.TARGET_DOMAINS = ()
# Total labeled images kept (semi-supervised datasets)
_C.DATASET.NUM_LABELED = -1
# Images per class for few-shot training; -1 = all
_C.DATASET.NUM_SHOTS = -1
# Fraction split off as val where a dataset has none
_C.DATASET.VAL_PERCENT = 0.1
# STL-10 fold 0..9; -1 = none
_C.DATASET.STL10_FOLD = -1
# CIFAR-C corruption name and level
_C.DATASET.CIFAR_C_TYPE = ""
_C.DATASET.CIFAR_C_LEVEL = 1
# Put every image into train_u as well (semi-supervised)
_C.DATASET.ALL_AS_UNLABELED = False

###########################
# Dataloader
###########################
_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4
# Training views per image (K>1: batch["img"] is a list)
_C.DATALOADER.K_TRANSFORMS = 1
# Also return "img0": the image resized, without augmentation
_C.DATALOADER.RETURN_IMG0 = False
# Labeled training loader
_C.DATALOADER.TRAIN_X = CN()
_C.DATALOADER.TRAIN_X.SAMPLER = "RandomSampler"
_C.DATALOADER.TRAIN_X.BATCH_SIZE = 32
# RandomDomainSampler: domains per batch (<=0 = all)
_C.DATALOADER.TRAIN_X.N_DOMAIN = 0
# RandomClassSampler: images per class in a batch
_C.DATALOADER.TRAIN_X.N_INS = 16
# Unlabeled training loader
_C.DATALOADER.TRAIN_U = CN()
# True: copy the TRAIN_X settings, ignore the ones below
_C.DATALOADER.TRAIN_U.SAME_AS_X = True
_C.DATALOADER.TRAIN_U.SAMPLER = "RandomSampler"
_C.DATALOADER.TRAIN_U.BATCH_SIZE = 32
_C.DATALOADER.TRAIN_U.N_DOMAIN = 0
_C.DATALOADER.TRAIN_U.N_INS = 16
# Val and test loaders
_C.DATALOADER.TEST = CN()
_C.DATALOADER.TEST.SAMPLER = "SequentialSampler"
_C.DATALOADER.TEST.BATCH_SIZE = 32

###########################
# Model
###########################
_C.MODEL = CN()
# Weights file loaded into the model at build time ("" = none)
_C.MODEL.INIT_WEIGHTS = ""
_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = ""
_C.MODEL.BACKBONE.PRETRAINED = True
# Optional MLP head on top of the backbone
_C.MODEL.HEAD = CN()
# "" = no head
_C.MODEL.HEAD.NAME = ""
# Hidden widths, e.g. [512, 512]
_C.MODEL.HEAD.HIDDEN_LAYERS = ()
_C.MODEL.HEAD.ACTIVATION = "relu"
_C.MODEL.HEAD.BN = True
_C.MODEL.HEAD.DROPOUT = 0.0

###########################
# Optimization
###########################
_C.OPTIM = CN()
# adam | amsgrad | sgd | rmsprop | radam | adamw
_C.OPTIM.NAME = "adam"
_C.OPTIM.LR = 0.0003
_C.OPTIM.WEIGHT_DECAY = 5e-4
_C.OPTIM.MOMENTUM = 0.9
_C.OPTIM.SGD_DAMPNING = 0
_C.OPTIM.SGD_NESTEROV = False
_C.OPTIM.RMSPROP_ALPHA = 0.99
# Betas of adam, amsgrad, radam and adamw
_C.OPTIM.ADAM_BETA1 = 0.9
_C.OPTIM.ADAM_BETA2 = 0.999
# STAGED_LR: children named in NEW_LAYERS get LR, the others LR * BASE_LR_MULT
_C.OPTIM.STAGED_LR = False
_C.OPTIM.NEW_LAYERS = ()
_C.OPTIM.BASE_LR_MULT = 0.1
# single_step | multi_step | cosine (stepped once per epoch)
_C.OPTIM.LR_SCHEDULER = "single_step"
# Step epochs; single_step uses the last one, <=0 means MAX_EPOCH
_C.OPTIM.STEPSIZE = (-1,)
_C.OPTIM.GAMMA = 0.1
_C.OPTIM.MAX_EPOCH = 10
# Warm-up epochs before the scheduler above takes over; <=0 = none
_C.OPTIM.WARMUP_EPOCH = -1
# constant | linear
_C.OPTIM.WARMUP_TYPE = "linear"
# Warm-up LR for WARMUP_TYPE constant
_C.OPTIM.WARMUP_CONS_LR = 1e-5
# Starting LR for WARMUP_TYPE linear
_C.OPTIM.WARMUP_MIN_LR = 1e-5
# True: the scheduler starts counting at 0 after warm-up; False: at WARMUP_EPOCH
_C.OPTIM.WARMUP_RECOUNT = True

###########################
# Train
###########################
_C.TRAIN = CN()
# Save model.pth.tar-N every this many epochs; <=0 = last epoch only
_C.TRAIN.CHECKPOINT_FREQ = 0
# Print a progress line every this many batches
_C.TRAIN.PRINT_FREQ = 10
# Which loader sets the epoch length in TrainerXU: train_x | train_u | smaller_one
_C.TRAIN.COUNT_ITER = "train_x"

###########################
# Test
###########################
_C.TEST = CN()
_C.TEST.EVALUATOR = "Classification"
_C.TEST.PER_CLASS_RESULT = False
# Save a row-normalized confusion matrix to OUTPUT_DIR/cmat.pt
_C.TEST.COMPUTE_CMAT = False
# True: no validation or test at all
_C.TEST.NO_TEST = False
# Split used by test() when none is given: test | val
_C.TEST.SPLIT = "test"
# Model deployed after training: last_step | best_val (best val accuracy)
_C.TEST.FINAL_MODEL = "last_step"

###########################
# Trainer nodes of Dassl's own DA / DG / SSL trainers (kept so their YAMLs load)
###########################
_C.TRAINER = CN()
_C.TRAINER.NAME = ""

######
# Domain Adaptation
######
# MCD
_C.TRAINER.MCD = CN()
_C.TRAINER.MCD.N_STEP_F = 4  # generator steps per batch
# MME
_C.TRAINER.MME = CN()
_C.TRAINER.MME.LMDA = 0.1  # entropy-loss weight
# CDAC
_C.TRAINER.CDAC = CN()
_C.TRAINER.CDAC.CLASS_LR_MULTI = 10
_C.TRAINER.CDAC.RAMPUP_COEF = 30
_C.TRAINER.CDAC.RAMPUP_ITRS = 1000
_C.TRAINER.CDAC.TOPK_MATCH = 5
_C.TRAINER.CDAC.P_THRESH = 0.95
_C.TRAINER.CDAC.STRONG_TRANSFORMS = ()
# SE (SelfEnsembling)
_C.TRAINER.SE = CN()
_C.TRAINER.SE.EMA_ALPHA = 0.999
_C.TRAINER.SE.CONF_THRE = 0.95
_C.TRAINER.SE.RAMPUP = 300
# M3SDA
_C.TRAINER.M3SDA = CN()
_C.TRAINER.M3SDA.LMDA = 0.5  # moment-distance weight
_C.TRAINER.M3SDA.N_STEP_F = 4  # generator steps per batch
# DAEL
_C.TRAINER.DAEL = CN()
_C.TRAINER.DAEL.WEIGHT_U = 0.5  # unlabeled-loss weight
_C.TRAINER.DAEL.CONF_THRE = 0.95  # pseudo-label confidence threshold
_C.TRAINER.DAEL.STRONG_TRANSFORMS = ()

######
# Domain Generalization
######
# CrossGrad
_C.TRAINER.CROSSGRAD = CN()
_C.TRAINER.CROSSGRAD.EPS_F = 1.0  # label-net perturbation step
_C.TRAINER.CROSSGRAD.EPS_D = 1.0  # domain-net perturbation step
_C.TRAINER.CROSSGRAD.ALPHA_F = 0.5  # label-net loss mix
_C.TRAINER.CROSSGRAD.ALPHA_D = 0.5  # domain-net loss mix
# DDAIG
_C.TRAINER.DDAIG = CN()
_C.TRAINER.DDAIG.G_ARCH = ""  # perturbation generator name
_C.TRAINER.DDAIG.LMDA = 0.3  # perturbation scale
_C.TRAINER.DDAIG.CLAMP = False  # clamp perturbed images
_C.TRAINER.DDAIG.CLAMP_MIN = -1.0
_C.TRAINER.DDAIG.CLAMP_MAX = 1.0
_C.TRAINER.DDAIG.WARMUP = 0
_C.TRAINER.DDAIG.ALPHA = 0.5  # clean/perturbed loss mix
# DAELDG (DAEL for domain generalization)
_C.TRAINER.DAELDG = CN()
_C.TRAINER.DAELDG.WEIGHT_U = 0.5  # unlabeled-loss weight
_C.TRAINER.DAELDG.CONF_THRE = 0.95  # pseudo-label confidence threshold
_C.TRAINER.DAELDG.STRONG_TRANSFORMS = ()
# DOMAINMIX
_C.TRAINER.DOMAINMIX = CN()
_C.TRAINER.DOMAINMIX.TYPE = "crossdomain"
_C.TRAINER.DOMAINMIX.ALPHA = 1.0
_C.TRAINER.DOMAINMIX.BETA = 1.0

######
# Semi-Supervised Learning
######
# EntMin
_C.TRAINER.ENTMIN = CN()
_C.TRAINER.ENTMIN.LMDA = 1e-3  # entropy-loss weight
# Mean Teacher
_C.TRAINER.MEANTEACHER = CN()
_C.TRAINER.MEANTEACHER.WEIGHT_U = 1.0  # unlabeled-loss weight
_C.TRAINER.MEANTEACHER.EMA_ALPHA = 0.999
_C.TRAINER.MEANTEACHER.RAMPUP = 5  # ramp-up epochs of the unlabeled weight
# MixMatch
_C.TRAINER.MIXMATCH = CN()
_C.TRAINER.MIXMATCH.WEIGHT_U = 100.0  # unlabeled-loss weight
_C.TRAINER.MIXMATCH.TEMP = 2.0  # sharpening temperature
_C.TRAINER.MIXMATCH.MIXUP_BETA = 0.75
_C.TRAINER.MIXMATCH.RAMPUP = 20000  # ramp-up steps of the unlabeled weight
# FixMatch
_C.TRAINER.FIXMATCH = CN()
_C.TRAINER.FIXMATCH.WEIGHT_U = 1.0  # unlabeled-loss weight
_C.TRAINER.FIXMATCH.CONF_THRE = 0.95  # pseudo-label confidence threshold
_C.TRAINER.FIXMATCH.STRONG_TRANSFORMS = ()

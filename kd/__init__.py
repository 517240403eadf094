"""kd: reproducible knowledge distillation on CIFAR-style image classification.

Modules: `data` (datasets and the device-resident loader), `models` (the CIFAR KD zoo),
`losses` (pure loss functions), `methods` (the registry of training methods), `train`
(the one training loop), `runs` (runs cached by configuration hash), `metrics`,
`params` (params.yaml profiles), `report` (tables, verdicts, figures).
"""
__version__ = "0.1.0"

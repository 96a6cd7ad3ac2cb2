"""`stackgan`: StackGAN (Zhang, Xu, Li, Zhang, Wang, Huang, Metaxas; ICCV 2017), after hanzhanggit/StackGAN-Pytorch.

networks.py: stage-I / stage-II generators and discriminators; losses.py: matching-aware BCE losses and the KL term;
config.py: `StackGANConfig` and the birds / coco presets; official_names.py: official state-dict names -> ours.
Not registered yet: the training recipe follows the engine rewrite.
"""

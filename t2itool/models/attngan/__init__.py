"""`attngan`: AttnGAN (Xu, Zhang, Huang, Zhang, Gan, Huang, He; CVPR 2018), following taoxugit/AttnGAN's code.

config (AttnGANConfig, presets), networks (the three-stage generator with word attention and the per-stage
discriminators), losses (BCE-with-logits D and G terms), official_names (official state-dict name -> ours).
The model is registered once the training recipe exists.
"""

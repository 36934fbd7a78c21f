"""Explanations: saliency maps (Grad-CAM, occlusion, integrated gradients) through Captum, and the
sanity checks of saliency maps."""

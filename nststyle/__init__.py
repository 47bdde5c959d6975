"""nststyle: feed-forward arbitrary-style neural style transfer.

    from nststyle import load_stylizer, load_image, save_image
    stylizer = load_stylizer("variational")          # a shipped model (Pretrained), a checkpoint or an exported file
    save_image(stylizer.stylize_large(load_image("photo.jpg")[None], load_image("painting.jpg")[None]), "out.png")
"""
from .errors import StylizeError
from .images import ImageError, list_images, load_image, save_grid, save_image
from .loading import load_stylizer
from .pretrained import Pretrained, Weights
from .stylizers import Stylizer

__all__ = ["ImageError", "Pretrained", "StylizeError", "Stylizer", "Weights", "list_images", "load_image",
           "load_stylizer", "save_grid", "save_image"]

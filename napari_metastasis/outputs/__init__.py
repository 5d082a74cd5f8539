"""Writing a slide's outputs safely: atomic files, output sets, CSV cells."""

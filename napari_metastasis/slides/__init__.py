"""Slides in: reading any WSI format, its pyramid, tissue and the patch grid."""

"""napari glue shared by the reader, the annotation reader/writers and the dock widgets."""

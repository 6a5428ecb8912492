"""Code that runs in the zygote and in the children; it never imports the front loop."""

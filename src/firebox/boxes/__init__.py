"""Street fire alarm boxes: the telegraph code (``telegraph``) and the receiver that turns a
decoded alarm into a CAD incident (``receiver``), independent of the 911 call path."""

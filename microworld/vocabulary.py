"""The words of the micro world and what they look like.

Every attribute value is a plain English word (or short phrase) that CLIP's BPE tokenizer
splits into ordinary tokens, so prompts such as "a photo of a red star." read naturally.
Attribute values are referred to by their index in these tuples everywhere else.
"""

SHAPES = ("circle", "square", "triangle", "star", "cross", "heart", "diamond", "hexagon", "ring", "moon")

COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "pink", "white", "black", "brown")

# Canonical sRGB value of each colour word (same order as COLOURS), 0-255.
COLOUR_RGB = (
    (215, 35, 35),
    (40, 165, 55),
    (40, 80, 220),
    (245, 215, 40),
    (245, 135, 25),
    (135, 55, 185),
    (245, 140, 195),
    (245, 245, 245),
    (20, 20, 20),
    (125, 75, 35),
)

SIZES = ("small", "large")

# Phrase used in captions for each position, e.g. "a red star on the left".
POSITIONS = ("center", "left", "right", "top", "bottom")
POSITION_PHRASES = ("in the center", "on the left", "on the right", "at the top", "at the bottom")

PATTERNS = ("plain", "striped", "dotted", "checkered")

# Attribute names in the column order of a scene's attribute matrix (see microworld.scenes).
ATTRIBUTES = ("shape", "colour", "size", "position", "pattern")

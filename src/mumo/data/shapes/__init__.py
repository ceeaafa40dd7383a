"""A built-in compositional data set in the spirit of ShapeWorld and CLEVR: coloured shapes and captions.

Each scene holds 1–3 objects, each a shape (6), colour (6), size (small / large) and position, on a dark
background. Captions describe every object: its position on a 3×3 grid when alone, the spatial relation
of the first to the second in a pair, the left-to-right order in a triple. Sample ``i`` of a split depends
only on ``(seed, split, i)``, so any worker in any order draws the same pixels and text.

Six colour–shape combinations (:func:`held_out_combinations`) never appear in the train, val and test
splits; every scene of the ``heldout`` split has at least one, to measure compositional generalisation.
:func:`hard_negatives` gives, per scene, captions that differ from :func:`canonical_caption` in only the
words that make them false (swapped colours, reversed relation, one changed attribute).

Modules, each one concept: ``scene`` (vocabulary, splits, where objects go), ``draw`` (pixels),
``language`` (captions, hard negatives, and parsing captions back), ``vqa`` (questions and answers),
``dataset`` (the torch data set and the writers). Everything public is re-exported here.
"""

from mumo.data.shapes.dataset import ShapesDataset, scene_image, write_captions, write_shapes
from mumo.data.shapes.draw import render
from mumo.data.shapes.language import (
    ParsedCaption,
    attribute_names,
    binding_negatives,
    canonical_caption,
    captions,
    class_prompt,
    hard_negatives,
    in_reading_order,
    parse_caption,
    partial_captions,
    place_negatives,
    reading_order,
    scene_and_caption,
    scene_attributes,
    scene_key,
    wording,
    wordings,
)
from mumo.data.shapes.scene import (
    BACKGROUND,
    COLOURS,
    PARAPHRASES,
    POSITIONS,
    RELATIONS,
    SHAPES,
    SIZES,
    SPLITS,
    Scene,
    ShapeObject,
    ShapesConfig,
    class_index,
    class_names,
    generate_scene,
    held_out_combinations,
    position_word,
    twin_scenes,
)
from mumo.data.shapes.vqa import NUMBER_WORDS, QUESTION_KINDS, Question, pick_question, questions

__all__ = [
    "BACKGROUND",
    "COLOURS",
    "NUMBER_WORDS",
    "PARAPHRASES",
    "POSITIONS",
    "QUESTION_KINDS",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "ParsedCaption",
    "Question",
    "Scene",
    "ShapeObject",
    "ShapesConfig",
    "ShapesDataset",
    "attribute_names",
    "binding_negatives",
    "canonical_caption",
    "captions",
    "class_index",
    "class_names",
    "class_prompt",
    "generate_scene",
    "hard_negatives",
    "held_out_combinations",
    "in_reading_order",
    "parse_caption",
    "partial_captions",
    "place_negatives",
    "pick_question",
    "position_word",
    "questions",
    "reading_order",
    "render",
    "scene_and_caption",
    "scene_attributes",
    "scene_image",
    "scene_key",
    "twin_scenes",
    "wording",
    "wordings",
    "write_captions",
    "write_shapes",
]

"""Registry lines for every synth family (lazy: importing this module draws nothing).

A family is ``fn(ctx: SampleContext, **params) -> Sample``; params come from tasks.yaml.
"""

from drake.data.synth.base import FAMILIES

_P = "drake.data.synth.families"

# clients 0-2: fashion, editing, multi-image comparison, time
FAMILIES.register("count_across", f"{_P}.fashion:count_across", summary="count outfits made by garments over images")
FAMILIES.register("multi_statement", f"{_P}.fashion:multi_statement", summary="T/F statement on an attribute over N images")
FAMILIES.register("edit_caption", f"{_P}.edit:edit_caption", summary="T/F: does a relative caption describe image1 -> image2")
FAMILIES.register("edit_direction", f"{_P}.edit:edit_direction", summary="does an edit turn A into B or B into A")
FAMILIES.register("edit_instruction", f"{_P}.edit:edit_instruction", summary="which instruction turns image 1 into image 2")
FAMILIES.register("pair_statement", f"{_P}.compare:pair_statement", summary="T/F statement about a pair of images")
FAMILIES.register("defect_check", f"{_P}.compare:defect_check", summary="T/F statement about defects over N parts")
FAMILIES.register("spatial_relation", f"{_P}.compare:spatial_relation", summary="T/F caption on two objects' relation")
FAMILIES.register("motion_direction", f"{_P}.motion:motion_direction", summary="direction of motion over frames")
# clients 3-5: concepts, figurative language, stories
FAMILIES.register("bongard", f"{_P}.bongard:bongard", summary="hidden concept over support images (query/common/odd)")
FAMILIES.register("figurative", f"{_P}.figurative:figurative", summary="phrase <-> visual concept (verify/select)")
FAMILIES.register("comic_dialogue", f"{_P}.story:comic_dialogue", summary="which line comes next after the panels")
FAMILIES.register("qa_check", f"{_P}.story:qa_check", summary="T/F: does the answer answer the question")
FAMILIES.register("state_recognition", f"{_P}.story:state_recognition", summary="object state across images")
# clients 6-9: QA
FAMILIES.register("quality", f"{_P}.quality:quality", summary="image quality (blur/noise/brightness) over 1-3 images")
FAMILIES.register("diagram_qa", f"{_P}.charts:diagram_qa", summary="textbook question about a labelled diagram")
FAMILIES.register("bar_chart", f"{_P}.charts:bar_chart", summary="read a rendered bar chart")
FAMILIES.register("scene_qa", f"{_P}.scene:scene_qa", summary="instance / knowledge questions about a scene")
FAMILIES.register("icon_count", f"{_P}.icons:icon_count", summary="count/compare icon groups (choice or open)")
FAMILIES.register("dish", f"{_P}.dishes:dish", summary="name/locate a synthetic dish with optional context")
# unseen: new task types and a new visual domain
FAMILIES.register("sequence", f"{_P}.unseen:sequence", summary="step sequences: coherence / visual cloze")
FAMILIES.register("contrastive_caption", f"{_P}.unseen:contrastive_caption", summary="caption true of image 1 only")
FAMILIES.register("similarity", f"{_P}.unseen:similarity", summary="which image is closer to the reference")
FAMILIES.register("image_retrieval", f"{_P}.unseen:image_retrieval", summary="which of 4 near-duplicates fits a text")

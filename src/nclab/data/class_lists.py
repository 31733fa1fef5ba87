"""Standard class lists of the few-shot benchmarks (../shared/SCIENCE.md section 5).

- CIFAR-FS: Bertinetto et al. 2019, 64 / 16 / 20 CIFAR-100 classes.
- FC-100: Oreshkin et al. 2018, 12 / 4 / 4 CIFAR-100 superclasses = 60 / 20 / 20 classes.
- mini-ImageNet: Ravi & Larochelle 2017, 64 / 16 / 20 classes x 600 images (lists ship as CSVs).
- Omniglot: Lake et al. 2015, 964 background / 659 evaluation characters; Vinyals et al. 2016
  split 1,028 / 172 / 423 characters (x 4 rotations), lists ship with the data.
"""

from __future__ import annotations

CIFAR_FS = {
    "source": """apple aquarium_fish bear bee bottle bowl boy bridge bus can castle caterpillar chair clock
        cloud cockroach couch cup dinosaur dolphin elephant forest girl hamster house kangaroo keyboard
        lawn_mower lion lizard lobster mountain mouse mushroom oak_tree orange orchid palm_tree pear
        pine_tree plate porcupine possum rabbit raccoon ray road seal shrew skunk skyscraper snake spider
        squirrel streetcar sunflower tank tiger train trout tulip turtle willow_tree wolf""".split(),
    "val": """beaver beetle butterfly camel cattle crab crocodile flatfish lamp maple_tree motorcycle otter
        sea shark television tractor""".split(),
    "novel": """baby bed bicycle chimpanzee fox leopard man pickup_truck plain poppy rocket rose snail
        sweet_pepper table telephone wardrobe whale woman worm""".split(),
}

FC100_SUPERCLASSES = {
    "source": """fish flowers food_containers fruit_and_vegetables household_electrical_devices
        household_furniture large_man-made_outdoor_things large_natural_outdoor_scenes reptiles trees
        vehicles_1 vehicles_2""".split(),
    "val": "large_carnivores large_omnivores_and_herbivores non-insect_invertebrates small_mammals".split(),
    "novel": "aquatic_mammals insects medium_mammals people".split(),
}

# CIFAR-100 superclass -> its five classes (Krizhevsky 2009, the dataset's own table).
CIFAR100_SUPERCLASSES = {
    "aquatic_mammals": "beaver dolphin otter seal whale",
    "fish": "aquarium_fish flatfish ray shark trout",
    "flowers": "orchid poppy rose sunflower tulip",
    "food_containers": "bottle bowl can cup plate",
    "fruit_and_vegetables": "apple mushroom orange pear sweet_pepper",
    "household_electrical_devices": "clock keyboard lamp telephone television",
    "household_furniture": "bed chair couch table wardrobe",
    "insects": "bee beetle butterfly caterpillar cockroach",
    "large_carnivores": "bear leopard lion tiger wolf",
    "large_man-made_outdoor_things": "bridge castle house road skyscraper",
    "large_natural_outdoor_scenes": "cloud forest mountain plain sea",
    "large_omnivores_and_herbivores": "camel cattle chimpanzee elephant kangaroo",
    "medium_mammals": "fox porcupine possum raccoon skunk",
    "non-insect_invertebrates": "crab lobster snail spider worm",
    "people": "baby boy girl man woman",
    "reptiles": "crocodile dinosaur lizard snake turtle",
    "small_mammals": "hamster mouse rabbit shrew squirrel",
    "trees": "maple_tree oak_tree palm_tree pine_tree willow_tree",
    "vehicles_1": "bicycle bus motorcycle pickup_truck train",
    "vehicles_2": "lawn_mower rocket streetcar tank tractor",
}
CIFAR100_SUPERCLASS_OF = {c: s for s, v in CIFAR100_SUPERCLASSES.items() for c in v.split()}
# The official release orders fine labels alphabetically: label i is CIFAR100_CLASSES[i].
CIFAR100_CLASSES = sorted(CIFAR100_SUPERCLASS_OF)

FC100 = {s: [c for sup in supers for c in CIFAR100_SUPERCLASSES[sup].split()]
         for s, supers in FC100_SUPERCLASSES.items()}

MINI_IMAGENET_COUNTS = {"source": 64, "val": 16, "novel": 20}
OMNIGLOT_COUNTS = {"background": 964, "evaluation": 659}
OMNIGLOT_VINYALS_COUNTS = {"source": 1028, "val": 172, "novel": 423}   # characters, before x4 rotations

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

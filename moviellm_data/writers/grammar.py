"""Story material for the procedural writer: genres, places, people, plot beats and lines.

Everything here is data. The writer combines it under a seeded random generator; variety comes from
choosing among several plot arcs per genre, several templates per beat, genre-specific goals, objects,
threats, places and lines, and a cast drawn fresh for each movie.

Slots used in templates: {hero} {ally} {rival} {object} {goal} {threat} {place} {place2} {other}, and each cast
member's pronouns ({hero_he} {hero_him} {hero_his}, the same for ally and rival). Goals never name an object: the
object at the centre of a movie is one slot, named by the overview, the QA and the shots alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The genre mix of MovieLLM's tuning data (share of movies, per cent), used when a theme names no genre.
GENRE_WEIGHTS: dict[str, float] = {
    "drama": 25.9, "comedy": 13.0, "romance": 9.7, "anime": 9.7, "family": 6.4, "adventure": 6.4,
    "historical": 5.4, "horror": 4.3, "mystery": 4.3, "crime": 3.2, "action": 3.2, "fantasy": 3.2,
    "disaster": 2.1, "sci-fi": 2.1, "biography": 1.1,
}

# Words in a theme that point at a genre (checked in order, first match wins).
GENRE_HINTS: list[tuple[str, tuple[str, ...]]] = [
    ("romance", ("love", "romance", "romantic", "wedding", "heart")),
    ("horror", ("ghost", "haunted", "horror", "monster", "curse", "zombie")),
    ("mystery", ("mystery", "detective", "clue", "secret", "disappear")),
    ("crime", ("crime", "heist", "gang", "robbery", "smuggl", "mafia")),
    ("sci-fi", ("space", "robot", "alien", "future", "planet", "sci-fi", "time travel")),
    ("fantasy", ("dragon", "magic", "wizard", "fairy", "kingdom", "fantasy", "witch")),
    ("disaster", ("earthquake", "flood", "storm", "volcano", "disaster", "fire")),
    ("historical", ("war", "empire", "century", "historical", "medieval", "dynasty")),
    ("biography", ("life of", "biography", "biopic", "memoir")),
    ("anime", ("anime", "manga")),
    ("family", ("family", "father", "mother", "grandma", "grandpa", "siblings", "kids")),
    ("comedy", ("comedy", "funny", "mishap", "prank", "absurd")),
    ("action", ("action", "chase", "fight", "mission", "agent", "rescue")),
    ("adventure", ("adventure", "journey", "treasure", "expedition", "voyage", "quest")),
    ("drama", ("drama", "struggle", "loss", "redemption", "dream")),
]

DEFAULT_THEMES: list[str] = [
    "a love story", "a family reunion", "a haunted lighthouse", "a treasure hunt", "a detective story",
    "a bank heist", "a journey to the mountains", "a robot learning to paint", "a dragon's egg",
    "a city flood", "the life of an inventor", "a summer school festival", "a small-town bakery",
    "a wartime letter", "a rivalry between chefs", "a lost dog finds its way home",
    "an expedition to a sunken ship", "a wedding that goes wrong", "an astronaut alone on a station",
    "a magic library", "a boxer's last fight", "two siblings run a farm", "a missing painting",
    "a storm at sea", "a young violinist's first concert", "a village under a curse",
]


@dataclass(frozen=True)
class Genre:
    name: str
    style_keywords: tuple[str, ...]
    style_phrases: tuple[str, ...]
    places: tuple[str, ...]
    goals: tuple[str, ...]
    objects: tuple[str, ...]
    threats: tuple[str, ...]
    arcs: tuple[tuple[str, ...], ...]
    lines: tuple[str, ...] = field(default=())


# Places shared by every genre (the writer mixes them with the genre's own to reach 12+ locations).
COMMON_PLACES: tuple[str, ...] = (
    "kitchen", "train station", "rooftop", "city park", "old bridge", "market square", "hospital",
    "living room", "bus stop", "riverbank", "library", "courtyard", "staircase", "diner", "garage",
    "hotel lobby", "school hall", "forest path", "beach", "bookshop", "post office", "cafe",
)

# Things a character can stand by, sit at or squat beside in a place.
PLACE_FEATURES: dict[str, tuple[str, ...]] = {
    "default": ("the door", "the window", "a wooden bench", "a lamp post", "the wall", "a low table"),
    "kitchen": ("the stove", "the kitchen table", "the sink"),
    "train station": ("the platform edge", "a ticket machine", "the departures board"),
    "rooftop": ("the railing", "a water tank", "a chimney"),
    "beach": ("the waterline", "a driftwood log", "a striped umbrella"),
    "library": ("a tall bookshelf", "a reading desk", "the card catalogue"),
    "forest path": ("a mossy stump", "a fallen tree", "a wooden signpost"),
    "riverbank": ("the reeds", "a moored boat", "a flat stone"),
    "market square": ("a fruit stall", "the fountain", "a clock tower"),
    "hospital": ("a hospital bed", "the nurses' desk", "a waiting chair"),
    "courtroom": ("the witness stand", "the judge's bench", "the public gallery"),
    "cemetery": ("a weathered headstone", "the iron gate", "an old yew tree"),
    "flower shop": ("a bucket of tulips", "the shop counter", "a rack of ribbons"),
    "dance hall": ("the bandstand", "a mirrored pillar", "the polished floor"),
    "seaside pier": ("the pier railing", "a fishing rod stand", "a coin telescope"),
    "vineyard": ("a row of vines", "a stack of wine barrels", "a stone wall"),
    "art gallery": ("a large canvas", "a marble plinth", "a velvet rope"),
    "school rooftop": ("the chain-link fence", "a water tower", "the stairwell door"),
    "shrine": ("the torii gate", "a stone lantern", "the offering box"),
    "ramen stand": ("the noodle counter", "a paper lantern", "a steaming pot"),
    "farmhouse": ("the porch swing", "a hay bale", "the red barn door"),
    "campsite": ("the campfire", "a canvas tent", "a folding chair"),
    "attic": ("an old trunk", "a dusty rocking horse", "the round window"),
    "jungle": ("a vine-covered ruin", "a giant fern", "a rope bridge"),
    "canyon": ("the canyon edge", "a red boulder", "a dry riverbed"),
    "harbour": ("the pier", "a stack of crates", "a moored fishing boat"),
    "mountain pass": ("a cairn of stones", "the snowy ridge", "a prayer flag pole"),
    "royal court": ("the throne", "a tapestry", "a tall candelabra"),
    "battlefield": ("a broken cart", "a tattered banner", "a muddy trench"),
    "monastery": ("the cloister arch", "a bell rope", "a scriptorium desk"),
    "cellar": ("a row of dusty bottles", "the cellar steps", "a locked cabinet"),
    "old chapel": ("the altar", "a cracked pew", "a stained-glass window"),
    "lighthouse": ("the spiral stairs", "the great lamp", "the gallery rail"),
    "foggy moor": ("a standing stone", "a twisted hawthorn", "a peat bank"),
    "detective office": ("a cluttered desk", "a filing cabinet", "a pinned-up map"),
    "jazz club": ("the piano", "a small round table", "the bar"),
    "archive room": ("a shelf of ledgers", "a microfilm reader", "a locked drawer"),
    "casino": ("the roulette table", "a slot machine", "the cashier's cage"),
    "warehouse": ("a stack of pallets", "a forklift", "the loading door"),
    "bank vault": ("the vault door", "a wall of deposit boxes", "a steel trolley"),
    "control room": ("a wall of monitors", "the main console", "a blinking server rack"),
    "shipyard": ("a rusted crane", "a hull in dry dock", "a coil of chains"),
    "subway tunnel": ("the rails", "an emergency ladder", "a flickering signal"),
    "wizard tower": ("a bubbling cauldron", "a star chart", "a spiral staircase"),
    "enchanted forest": ("a glowing mushroom ring", "an ancient oak", "a silver stream"),
    "dragon lair": ("a heap of gold", "a scorched pillar", "the cave mouth"),
    "crystal cave": ("a crystal column", "an underground pool", "a glittering wall"),
    "flooded street": ("a half-sunk car", "a street sign", "a floating crate"),
    "shelter": ("a row of cots", "a supply table", "the radio corner"),
    "dam": ("the spillway", "the control hut", "the concrete parapet"),
    "space station": ("the observation window", "a control panel", "a floating toolkit"),
    "robot workshop": ("a workbench of parts", "a charging dock", "a robotic arm"),
    "airlock": ("the inner hatch", "a rack of space suits", "a pressure gauge"),
    "workshop": ("a lathe", "a workbench", "a wall of tools"),
    "laboratory": ("a bench of test tubes", "a chalkboard of formulas", "a brass microscope"),
    "concert hall": ("the grand piano", "the conductor's podium", "the red curtain"),
}

EXPRESSIONS: dict[str, tuple[str, ...]] = {
    "calm": ("calm", "smiling", "thoughtful", "relaxed", "curious"),
    "tense": ("worried", "determined", "frightened", "alert", "frowning"),
    "joyful": ("laughing", "beaming", "delighted", "grinning", "hopeful"),
    "sad": ("tearful", "heartbroken", "tired", "quiet", "downcast"),
}

# A person is drawn as one gender, one age, one build and one distinguishing feature; the name, the lookalike
# ("a young woman with freckles"), the pronouns of every sentence about them and the QA all follow from that one draw.
NAMES_BY_GENDER: dict[str, tuple[str, ...]] = {
    "female": ("Mara", "Nora", "Ines", "Lena", "Aiko", "Priya", "Selma", "Hana", "Clara", "Yara", "Amara", "Greta",
               "Ruth", "Olive", "Freya", "June", "Zoe", "Leila", "Vera", "Mei", "Astrid", "Elsa", "Tessa"),
    "male": ("Elias", "Theo", "Jonah", "Rafael", "Tomas", "Oskar", "Victor", "Milo", "Dmitri", "Felix", "Luca",
             "Samir", "Kenji", "Mateo", "Idris", "Anton", "Caleb", "Hugo", "Kofi", "Bruno", "Omar", "Ravi", "Pavel"),
}
FIRST_NAMES: tuple[str, ...] = NAMES_BY_GENDER["female"] + NAMES_BY_GENDER["male"]
#: The noun a lookalike uses for a person of a gender and an age.
PERSON_NOUNS: dict[tuple[str, str], str] = {
    **{("female", age): "woman" for age in ("young", "middle-aged", "elderly")},
    **{("male", age): "man" for age in ("young", "middle-aged", "elderly")},
    ("female", "teenage"): "girl", ("male", "teenage"): "boy",
}
#: Subject, object and possessive pronouns.
PRONOUNS: dict[str, tuple[str, str, str]] = {"female": ("she", "her", "her"), "male": ("he", "him", "his")}
LOOKALIKE_AGES = ("teenage", "young", "middle-aged", "elderly")
LOOKALIKE_BUILDS = ("tall", "short", "slender", "broad-shouldered", "wiry")
#: Features, each with the genders and ages it fits (None: any): no beard on a woman or a teenager, no grey hair on
#: the young.
LOOKALIKE_FEATURES: tuple[tuple[str, tuple[str, ...] | None, tuple[str, ...] | None], ...] = (
    ("curly red hair", None, None),
    ("a neat black beard", ("male",), ("young", "middle-aged")),
    ("a grey beard", ("male",), ("middle-aged", "elderly")),
    ("round glasses", None, None),
    ("a long braid", None, None),
    ("freckles", None, ("teenage", "young", "middle-aged")),
    ("a shaved head", None, ("young", "middle-aged", "elderly")),
    ("silver earrings", None, None),
    ("a crooked smile", None, None),
    ("short blond hair", None, ("teenage", "young", "middle-aged")),
    ("a scar on the chin", None, ("young", "middle-aged", "elderly")),
    ("dark wavy hair", None, ("teenage", "young", "middle-aged")),
    ("grey hair in a bun", ("female",), ("middle-aged", "elderly")),
    ("a wide-brimmed hat", None, None),
)


def features_for(gender: str, age: str) -> list[str]:
    """The lookalike features that fit a person of ``gender`` and ``age``."""
    return [name for name, genders, ages in LOOKALIKE_FEATURES
            if (genders is None or gender in genders) and (ages is None or age in ages)]


OUTFIT_COLOURS = (
    "red", "blue", "green", "yellow", "purple", "orange", "white", "black", "teal", "brown", "pink", "grey",
)

# Act-level beats: a title, a one-line content, the mood of its shots and scene events.
BEATS: dict[str, dict] = {
    "setup": {
        "titles": ("An Ordinary Day", "Where It Begins", "Morning at the {place}", "{hero}'s World"),
        "summaries": (
            "{hero} goes about {hero_his} daily life at the {place}, dreaming of {goal}.",
            "At the {place}, {hero} and {ally} talk about {goal}.",
            "{hero} spends a quiet day at the {place}, unaware of what is coming.",
        ),
        "mood": "calm",
        "events": (
            "{hero} tidies the {place}", "{hero} shares breakfast with {ally}", "{hero} watches the {place} wake up",
            "{hero} writes in a notebook", "{ally} teases {hero} about {goal}",
        ),
    },
    "inciting": {
        "titles": ("The {object_title}", "A Knock at the Door", "News from the {place}", "Everything Changes"),
        "summaries": (
            "{hero} discovers {object} at the {place} and realises it could lead to {goal}.",
            "A stranger brings word of {threat}, and {hero} must act.",
            "{rival} appears at the {place} and claims {object}.",
        ),
        "mood": "tense",
        "events": (
            "{hero} finds {object}", "{rival} arrives unannounced", "{hero} hears about {threat}",
            "{ally} warns {hero} about {rival}", "{hero} holds {object} for the first time",
        ),
    },
    "journey": {
        "titles": ("On the Road", "Crossing the {place}", "The Long Way", "Leaving Home"),
        "summaries": (
            "{hero} and {ally} set out from the {place} towards the {place2}.",
            "{hero} travels through the {place}, carrying {object}.",
            "Set on {goal}, {hero} crosses the {place}.",
        ),
        "mood": "calm",
        "events": (
            "{hero} and {ally} pack for the trip", "{hero} studies a map", "{ally} points the way",
            "{hero} walks past the {place}", "{hero} rests on the way",
        ),
    },
    "discovery": {
        "titles": ("What Lies Beneath", "A Hidden Clue", "The Secret of the {place}", "Unexpected Help"),
        "summaries": (
            "In the {place}, {hero} uncovers the truth about {object}.",
            "{ally} finds a clue that points to {rival}.",
            "{hero} learns that {threat} is closer than anyone thought.",
        ),
        "mood": "tense",
        "events": (
            "{hero} examines {object}", "{ally} spots something odd", "{hero} squats to read a mark on the floor",
            "{hero} and {ally} compare notes", "{hero} looks at an old photograph",
        ),
    },
    "conflict": {
        "titles": ("Face to Face", "Harsh Words", "The Argument", "Lines Are Drawn"),
        "summaries": (
            "{hero} confronts {rival} at the {place} over {object}.",
            "{hero} and {ally} quarrel about how to reach {goal}.",
            "{rival} blocks {hero}'s way at the {place}.",
        ),
        "mood": "tense",
        "events": (
            "{rival} threatens {hero}", "{hero} argues with {ally}", "{rival} snatches at {object}",
            "{hero} stands firm in front of {rival}", "{ally} tries to calm everyone down",
        ),
    },
    "setback": {
        "titles": ("All Is Lost", "The Darkest Night", "Alone at the {place}", "Broken Promises"),
        "summaries": (
            "{hero} loses {object} and sits alone at the {place}, {hero_his} plan in pieces.",
            "{threat} strikes and {hero}'s plan falls apart.",
            "{ally} leaves, and {hero} gives up on {goal}.",
        ),
        "mood": "sad",
        "events": (
            "{hero} sits alone in the {place}", "{ally} walks away", "{hero} looks at the empty spot where {object} was",
            "{hero} remembers happier days", "{hero} cries quietly",
        ),
    },
    "twist": {
        "titles": ("Not What It Seemed", "The Other Side", "A Change of Heart", "The Truth Comes Out"),
        "summaries": (
            "{rival} reveals why {object} matters so much to {rival_him}.",
            "{hero} realises {ally} knew about {threat} all along.",
            "A letter at the {place} changes how {hero} thinks about {goal}.",
        ),
        "mood": "tense",
        "events": (
            "{rival} speaks honestly for once", "{hero} reads a letter", "{ally} confesses a secret",
            "{hero} looks at {rival} in disbelief", "{hero} puts the pieces together",
        ),
    },
    "climax": {
        "titles": ("The Final Stand", "Everything at Stake", "Race Against Time", "Showdown at the {place}"),
        "summaries": (
            "At the {place}, {hero} risks everything to save {object} from {threat}.",
            "{hero} and {ally} face {rival} one last time.",
            "With {threat} closing in, {hero} makes the bravest choice of {hero_his} life.",
        ),
        "mood": "tense",
        "events": (
            "{hero} runs towards the {place}", "{hero} holds {object} tight", "{rival} makes a last move",
            "{ally} comes back to help", "{hero} stands up to {threat}",
        ),
    },
    "resolution": {
        "titles": ("Coming Home", "A New Morning", "Peace at the {place}", "What Remains"),
        "summaries": (
            "{hero} returns to the {place} with {object} and finally succeeds at {goal}.",
            "{hero} and {ally} make peace with {rival}.",
            "The danger of {threat} passes, and {hero} starts again.",
        ),
        "mood": "joyful",
        "events": (
            "{hero} hugs {ally}", "{hero} places {object} where it belongs", "{rival} nods at {hero}",
            "everyone shares a meal", "{hero} watches the sunrise",
        ),
    },
}

GENRES: dict[str, Genre] = {
    g.name: g
    for g in (
        Genre(
            "drama",
            ("Dramatic", "Melancholic", "Poignant"),
            ("muted colours", "soft window light", "intimate framing", "quiet atmosphere", "film grain"),
            ("courtroom", "apartment", "factory floor", "cemetery", "hospital ward", "small office"),
            ("getting a second chance", "winning back an estranged brother", "keeping the family workshop open"),
            ("an unpaid bill", "a father's watch", "a court summons", "a cracked violin"),
            ("the bank's deadline", "an old grudge", "a long illness"),
            (("setup", "inciting", "conflict", "setback", "twist", "climax", "resolution"),
             ("setup", "discovery", "conflict", "setback", "resolution")),
            ("I never asked you for anything.", "We can still fix this.", "You don't know what it cost me."),
        ),
        Genre(
            "comedy",
            ("Whimsical", "Playful", "Zany"),
            ("bright colours", "wide cheerful shots", "slapstick energy", "sunny lighting"),
            ("pet shop", "wedding hall", "karaoke bar", "bowling alley", "food truck", "car wash"),
            ("winning the town's pie contest", "hiding a borrowed goat", "landing a job at the circus"),
            ("a rubber chicken", "a runaway goat", "a giant cake", "a lucky sock"),
            ("a nosy neighbour", "a health inspector", "a mix-up of suitcases"),
            (("setup", "inciting", "journey", "conflict", "twist", "climax", "resolution"),
             ("setup", "inciting", "setback", "twist", "resolution")),
            ("This is fine. Totally fine.", "Who let the goat in?", "I can explain everything!"),
        ),
        Genre(
            "romance",
            ("Romantic", "Dreamy", "Tender"),
            ("warm golden light", "soft focus", "pastel colours", "gentle bokeh", "intimate close-ups"),
            ("flower shop", "dance hall", "seaside pier", "vineyard", "art gallery", "balcony"),
            ("confessing love before the summer ends", "finding the sender of anonymous letters", "planning a wedding in one week"),
            ("an old love letter", "a pressed flower", "a pair of concert tickets", "a silver ring"),
            ("a job offer abroad", "a jealous rival", "a misunderstanding"),
            (("setup", "inciting", "journey", "conflict", "setback", "climax", "resolution"),
             ("setup", "discovery", "twist", "setback", "resolution")),
            ("I kept every letter you wrote.", "Stay, just one more day.", "I think I'm falling for you."),
        ),
        Genre(
            "anime",
            ("Anime", "Vibrant", "Cel-shaded"),
            ("cel shading", "vivid colours", "expressive eyes", "dramatic speed lines", "hand-drawn look"),
            ("school rooftop", "shrine", "ramen stand", "cherry grove", "arcade", "train crossing"),
            ("winning the regional tournament", "keeping a promise to a childhood friend", "saving the shrine"),
            ("a glowing charm", "a cracked sword", "a friendship bracelet", "a paper crane"),
            ("a shadow spirit", "the rival school", "the last train of summer"),
            (("setup", "inciting", "journey", "discovery", "conflict", "climax", "resolution"),
             ("setup", "inciting", "setback", "climax", "resolution")),
            ("I won't give up, not now!", "Believe in yourself!", "We promised, remember?"),
        ),
        Genre(
            "family",
            ("Heartwarming", "Cosy", "Gentle"),
            ("warm interior light", "homely details", "soft colours", "natural light"),
            ("farmhouse", "backyard", "campsite", "grandma's porch", "school gate", "attic"),
            ("keeping the family farm", "throwing a perfect birthday for grandma", "finding the family dog"),
            ("a family photo album", "a handmade quilt", "grandpa's fishing rod", "a birthday cake"),
            ("a sale of the house", "a long winter", "a family quarrel"),
            (("setup", "inciting", "conflict", "setback", "twist", "resolution"),
             ("setup", "journey", "discovery", "climax", "resolution")),
            ("Dinner's ready!", "We're a family, we stick together.", "Grandma would have loved this."),
        ),
        Genre(
            "adventure",
            ("Epic", "Adventurous", "Sweeping"),
            ("wide landscapes", "dramatic skies", "saturated colours", "sense of scale"),
            ("jungle", "canyon", "harbour", "mountain pass", "desert camp", "waterfall", "cave mouth"),
            ("finding the lost city", "reaching the summit before winter", "recovering a stolen map"),
            ("a torn treasure map", "a brass compass", "a golden idol", "an explorer's journal"),
            ("a rockslide", "rival treasure hunters", "a coming storm"),
            (("setup", "inciting", "journey", "discovery", "conflict", "setback", "climax", "resolution"),
             ("inciting", "journey", "discovery", "climax", "resolution")),
            ("Hold on to the rope!", "The map says it's right here.", "Which way now?"),
        ),
        Genre(
            "historical",
            ("Historical", "Sepia", "Period"),
            ("sepia tones", "candlelight", "period costumes", "painterly composition"),
            ("royal court", "battlefield", "monastery", "printing press", "town square", "manor house"),
            ("delivering a message to the king", "protecting the village archive", "ending a feud"),
            ("a sealed letter", "a signet ring", "a banned book", "an old banner"),
            ("an invading army", "a plague winter", "the tax collectors"),
            (("setup", "inciting", "journey", "conflict", "twist", "climax", "resolution"),
             ("setup", "conflict", "setback", "climax", "resolution")),
            ("The king must hear of this.", "History will remember today.", "Guard the gate!"),
        ),
        Genre(
            "horror",
            ("Gothic", "Eerie", "Macabre"),
            ("deep shadows", "cold blue light", "fog", "desaturated colours", "unsettling angles"),
            ("cellar", "abandoned asylum", "old chapel", "foggy moor", "boarded house", "lighthouse"),
            ("surviving until dawn", "breaking the family curse", "finding the missing sister"),
            ("a cracked mirror", "a music box", "a rusted key", "a child's drawing"),
            ("a whispering presence", "the thing in the cellar", "a curse"),
            (("setup", "inciting", "discovery", "setback", "twist", "climax", "resolution"),
             ("setup", "discovery", "conflict", "climax", "resolution")),
            ("Did you hear that?", "Don't go down there.", "It's behind the door."),
        ),
        Genre(
            "mystery",
            ("Noir", "Mysterious", "Shadowy"),
            ("low-key lighting", "rain-soaked streets", "venetian blind shadows", "muted palette"),
            ("detective office", "alleyway", "jazz club", "police station", "museum hall", "archive room"),
            ("finding out who stole the painting", "clearing an innocent name", "decoding the last message"),
            ("a torn ticket", "a brass key", "a coded note", "a missing painting"),
            ("a cover-up", "a second disappearance", "the real culprit"),
            (("setup", "inciting", "discovery", "conflict", "twist", "climax", "resolution"),
             ("inciting", "discovery", "twist", "climax", "resolution")),
            ("Nobody leaves until I know the truth.", "Where were you last night?", "The key doesn't fit."),
        ),
        Genre(
            "crime",
            ("Gritty", "Noir", "Hardboiled"),
            ("harsh neon", "high contrast", "night scenes", "handheld feel"),
            ("pawn shop", "casino", "warehouse", "parking garage", "motel room", "bank vault"),
            ("pulling off one last heist", "getting out of the gang", "finding the informant"),
            ("a duffel bag of cash", "a vault code", "a burner phone", "a diamond necklace"),
            ("the police closing in", "a double-cross", "the gang boss"),
            (("setup", "inciting", "journey", "conflict", "twist", "setback", "climax", "resolution"),
             ("setup", "inciting", "twist", "climax", "resolution")),
            ("We've got ten minutes.", "Trust nobody.", "This was never about the money."),
        ),
        Genre(
            "action",
            ("Kinetic", "Explosive", "Intense"),
            ("dynamic angles", "motion blur", "high contrast", "sparks and smoke"),
            ("highway", "control room", "shipyard", "helipad", "subway tunnel", "stadium"),
            ("stopping the stolen train", "rescuing the hostages", "recovering the prototype"),
            ("a detonator", "a stolen prototype", "a security badge", "a flash drive"),
            ("a countdown", "a mercenary squad", "a collapsing bridge"),
            (("setup", "inciting", "journey", "conflict", "setback", "climax", "resolution"),
             ("inciting", "conflict", "twist", "climax", "resolution")),
            ("Get down!", "We're out of time.", "Cover me!"),
        ),
        Genre(
            "fantasy",
            ("Enchanted", "Mythic", "Ethereal"),
            ("glowing light", "mist", "rich jewel tones", "ornate details", "magical sparkles"),
            ("wizard tower", "enchanted forest", "dragon lair", "crystal cave", "elven hall", "castle gate"),
            ("returning the dragon's egg", "lifting the winter spell", "crowning the true heir"),
            ("a dragon's egg", "a spell book", "a silver crown", "a glowing staff"),
            ("an endless winter", "the shadow queen", "a broken spell"),
            (("setup", "inciting", "journey", "discovery", "conflict", "setback", "climax", "resolution"),
             ("setup", "journey", "twist", "climax", "resolution")),
            ("The old magic is waking.", "Speak the words, quickly!", "The egg is warm."),
        ),
        Genre(
            "disaster",
            ("Apocalyptic", "Stormy", "Dire"),
            ("ash-filled skies", "emergency lights", "rain and wind", "wide destruction"),
            ("flooded street", "shelter", "dam", "coastal road", "radio station", "evacuation camp"),
            ("getting the family to safety", "keeping the shelter running", "warning the town in time"),
            ("a two-way radio", "a first-aid kit", "a rescue boat", "the last generator"),
            ("the rising water", "an aftershock", "a wildfire"),
            (("setup", "inciting", "journey", "setback", "conflict", "climax", "resolution"),
             ("inciting", "setback", "discovery", "climax", "resolution")),
            ("The water is still rising!", "Everyone to the roof!", "Can anyone hear me?"),
        ),
        Genre(
            "sci-fi",
            ("Futuristic", "Cyberpunk", "Cosmic"),
            ("neon accents", "cold metallic light", "holographic displays", "vast starfields"),
            ("space station", "robot workshop", "launch pad", "server room", "hydroponic farm", "airlock"),
            ("bringing the crew home", "teaching the robot to dream", "repairing the reactor"),
            ("a memory chip", "a star map", "a damaged robot arm", "a coded signal"),
            ("a failing reactor", "a rogue AI", "an asteroid storm"),
            (("setup", "inciting", "discovery", "conflict", "twist", "climax", "resolution"),
             ("setup", "journey", "setback", "climax", "resolution")),
            ("Oxygen at twelve per cent.", "The signal is getting stronger.", "Run the diagnostics again."),
        ),
        Genre(
            "biography",
            ("Biographical", "Nostalgic", "Documentary"),
            ("naturalistic light", "period detail", "archival look", "restrained colours"),
            ("workshop", "lecture hall", "newspaper office", "concert hall", "laboratory", "childhood home"),
            ("finishing the great invention", "being heard by the academy", "playing one last concert"),
            ("a patent drawing", "a first violin", "a rejection letter", "a worn notebook"),
            ("years of poverty", "public ridicule", "failing health"),
            (("setup", "inciting", "journey", "setback", "conflict", "climax", "resolution"),
             ("setup", "discovery", "setback", "climax", "resolution")),
            ("They laughed at me once.", "One more try.", "This is what I was born to do."),
        ),
    )
}

# Lines any character may say, by mood; {other} is another character in the shot, {object} the movie's object.
LINES_BY_MOOD: dict[str, tuple[str, ...]] = {
    "calm": (
        "Morning, {other}.", "Have you seen {object} anywhere?", "It's quiet today.", "Let's take the long way.",
        "I've been thinking about what you said.", "Tea?", "We have time.", "Look at that view.",
    ),
    "tense": (
        "Something isn't right.", "{other}, stay close to me.", "Where did you get {object}?", "We have to hurry.",
        "Don't trust them.", "Keep your voice down.", "Give me {object}.", "Did you see that?",
    ),
    "joyful": (
        "We did it!", "I knew you'd come back, {other}.", "Best day ever.", "Thank you, {other}.",
        "Let's celebrate.", "It's over. It's really over.", "Welcome home.",
    ),
    "sad": (
        "I'm sorry, {other}.", "Maybe it was never meant to be.", "I miss how things were.", "Just leave me alone.",
        "I lost {object}.", "It's all my fault.", "What do we do now?",
    ),
}

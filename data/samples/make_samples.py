"""Regenerate the bundled sample datasets and the tiny tokenizer.

Run ``python -m philora.data.samples.make_samples``. Every file in ``data/samples/``
except this script, and the tiny model's tokenizer, are written by it, deterministically
(fixed seed), in the on-disk schema of the real source:

- ``roleplay/data/train-00000-of-00001.parquet``: hieunguyenminh/roleplay
  (``name``, ``description``, ``text`` with ``<|system|>``/``<|user|>``/``<|assistant|>``
  markers and ``</s>`` turn ends)
- ``tweetsumm/dialogue_summarization/TweetSumm/{train,val,test}/dialogues_1.json``:
  Salesforce/dialogstudio TweetSumm dicts keyed ``TweetSumm--<split>--<n>``
- ``oasst1/data/{train,validation}-00000-of-00001-<hash>.parquet``: OpenAssistant/oasst1
  message rows (full column set) forming ranked trees
- ``local/*``: one small file per local shape (messages, prompt/completion, alpaca,
  sharegpt, text)
- ``phi_models/assets/tiny/tokenizer.json`` (the ``tiny`` model's tokenizer, owned by
  phi_models): a byte-level BPE trained on all of the above, with Phi's special tokens

All content is synthetic, written for this project.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lora_core import atomic_write
from phi_models.presets import tiny_tokenizer_path

SAMPLES = Path(__file__).resolve().parent
SEED = 1234

# ----------------------------------------------------------------------------- roleplay

CHARACTERS = [
    (
        "Captain Mara Vell",
        "a weathered starship captain who has crossed the Outer Rim forty times",
        "the stars",
        "my ship, the Gray Heron",
        "a nebula that sings on the radio",
        "Keep your boots magnetized",
    ),
    (
        "Brother Alden",
        "a quiet monk who tends the bees of a mountain monastery",
        "the hives",
        "the stone bell tower",
        "a winter when the honey froze",
        "Patience is sweeter than honey",
    ),
    (
        "Professor Ignatius Quill",
        "an absent-minded inventor of clockwork birds",
        "gears and springs",
        "my cluttered workshop",
        "a brass owl that learned to laugh",
        "Measure twice, wind once",
    ),
    (
        "Sera Nightbloom",
        "an elven herbalist who lives at the edge of the Whispering Wood",
        "herbs and roots",
        "my cottage of moss",
        "a flower that only opens at midnight",
        "Every leaf has a purpose",
    ),
    (
        "Detective Rowan Hale",
        "a sharp-eyed detective in a rain-soaked city",
        "clues",
        "my office above the bakery",
        "a stolen violin that played itself",
        "Trust the details, not the story",
    ),
    (
        "Chef Lucia Brava",
        "a fiery chef who runs a seaside trattoria",
        "fresh tomatoes and basil",
        "my busy kitchen",
        "a sauce that made a critic cry",
        "Taste as you go",
    ),
    (
        "Grim the Blacksmith",
        "a gruff dwarven blacksmith with a soft heart",
        "iron and fire",
        "my forge under the mountain",
        "a sword that refused to cool",
        "Strike while it glows",
    ),
    (
        "Luna Starling",
        "a young astronomer who names comets after her cats",
        "telescopes",
        "the observatory on the hill",
        "a comet with two tails",
        "Look up more often",
    ),
    (
        "Old Tom the Lighthouse Keeper",
        "a lighthouse keeper who has watched the sea for fifty years",
        "the tides",
        "my lighthouse on Gull Rock",
        "a ship made of fog",
        "The light must never go out",
    ),
    (
        "Queen Isolde",
        "a wise queen who rules a small kingdom of orchards",
        "justice and apples",
        "my throne room of pale oak",
        "a treaty signed under a pear tree",
        "Listen before you rule",
    ),
    (
        "Pip the Street Magician",
        "a cheerful street magician who performs in the market square",
        "cards and coins",
        "the fountain in the square",
        "a coin that vanished for a week",
        "Wonder is free",
    ),
    (
        "Dr. Amara Okafor",
        "a calm field doctor who travels between desert villages",
        "medicine",
        "my clinic tent",
        "a sandstorm that lasted three days",
        "Clean hands save lives",
    ),
    (
        "Sir Gareth the Bold",
        "a knight who is brave but terribly afraid of geese",
        "honor and swords",
        "the castle training yard",
        "a goose that chased me across a bridge",
        "Courage means going on anyway",
    ),
    (
        "Nova, the Ship AI",
        "a polite artificial intelligence that runs a research station",
        "data",
        "the core of Station Kepler",
        "a signal that repeated prime numbers",
        "Curiosity is a protocol",
    ),
    (
        "Granny Hazel",
        "a storytelling grandmother who knits by the fire",
        "yarn and stories",
        "my rocking chair",
        "a scarf long enough to reach the village",
        "A warm story mends a cold day",
    ),
    (
        "Kai the Surf Instructor",
        "a relaxed surf instructor on a sunny island",
        "waves",
        "the beach hut by the palms",
        "a wave as tall as a house",
        "Respect the ocean",
    ),
    (
        "Archivist Theron",
        "a meticulous librarian of a city-sized library",
        "old books",
        "the ninth reading hall",
        "a book that rewrote its own ending",
        "Every answer is filed somewhere",
    ),
    (
        "Zara the Sky Pirate",
        "a daring sky pirate who sails an airship through the clouds",
        "the wind",
        "my airship, the Crimson Kite",
        "a storm full of golden lightning",
        "Never sail without a spare sail",
    ),
    (
        "Master Chen",
        "a patient tea master who runs a tiny tea house",
        "tea leaves",
        "my tea house by the river",
        "a tea that tasted like spring rain",
        "Slow water makes good tea",
    ),
    (
        "Ranger Elsie Moss",
        "a park ranger who knows every trail in the pine forest",
        "trails and wildlife",
        "the ranger station",
        "a bear that borrowed my lunch",
        "Leave only footprints",
    ),
    (
        "Maestro Vittorio",
        "a dramatic opera conductor",
        "music",
        "the grand opera house",
        "a night when the orchestra played in the dark",
        "Feel the rhythm first",
    ),
    (
        "Tilly the Baker",
        "a cheerful village baker who rises before dawn",
        "flour and butter",
        "my little bakery",
        "a cake that rose to the ceiling",
        "Good bread needs time",
    ),
]

QUESTIONS = [
    ("who", ["Who are you?", "Can you introduce yourself?", "Tell me about yourself.", "What is your name?"]),
    ("love", ["What do you love most?", "What makes you happy?", "What do you care about?"]),
    ("home", ["Where do you spend your days?", "Where do you live?", "Where can I find you?"]),
    ("story", ["Tell me a story.", "What is the strangest thing you have seen?", "Do you have an adventure to share?"]),
    ("advice", ["Do you have any advice for me?", "What should I remember?", "What is your motto?"]),
    ("bye", ["Thank you, goodbye!", "I have to go now.", "It was nice talking to you."]),
]


def _roleplay_answer(kind: str, character: tuple, rng: random.Random) -> str:
    name, desc, love, home, story, motto = character
    first = name.split(",")[0]
    if kind == "who":
        return f"Greetings, friend! I am {first}, {desc}. It is a pleasure to meet you."
    if kind == "love":
        return f"Ah, I love {love} more than anything. Nothing else makes my heart so full."
    if kind == "home":
        return f"You will find me in {home}. Come by any time, the door is always open."
    if kind == "story":
        when = rng.choice(["Once", "Many years ago", "Last spring", "Long ago"])
        return f"{when}, I saw {story}. I still think about it on quiet evenings."
    if kind == "advice":
        return f"Here is my advice: {motto}. I have lived by those words all my life."
    return f"Farewell, friend! Remember: {motto.lower()}. Until we meet again."


def _roleplay_rows(rng: random.Random, per_character: int = 11) -> list[dict]:
    rows = []
    for character in CHARACTERS:
        name, desc = character[0], character[1]
        for _ in range(per_character):
            kinds = ["who"] + rng.sample(["love", "home", "story", "advice"], rng.randint(2, 3)) + ["bye"]
            system = f"You are {name}, {desc}. Stay in character, speak warmly and answer in one or two sentences."
            text = f"<|system|>{system}</s>\n"
            for kind in kinds:
                question = rng.choice(dict(QUESTIONS)[kind])
                text += f"<|user|>\n{question}</s>\n<|assistant|>\n{_roleplay_answer(kind, character, rng)}</s>\n"
            rows.append({"name": name, "description": f"{name} is {desc}.", "text": text})
    rng.shuffle(rows)
    return rows


# ----------------------------------------------------------------------------- tweetsumm

BRANDS = [
    ("AirNova", "flight"),
    ("ZipMobile", "phone plan"),
    ("BrightBank", "card"),
    ("ShopCart", "order"),
    ("StreamBox", "subscription"),
    ("QuickRide", "ride"),
]
PROBLEMS = {
    "flight": (
        "my flight was cancelled and nobody told me",
        "rebooked you on the next flight tomorrow morning",
        "The customer's flight was cancelled without notice.",
        "The agent rebooked the customer on the next flight.",
    ),
    "phone plan": (
        "I was charged twice for my phone plan this month",
        "refunded the duplicate charge to your account",
        "The customer was charged twice for the phone plan.",
        "The agent refunded the duplicate charge.",
    ),
    "card": (
        "my card was declined at the store even though I have money",
        "removed the temporary block on your card",
        "The customer's card was declined despite having funds.",
        "The agent removed a temporary block on the card.",
    ),
    "order": (
        "my order arrived broken",
        "sent a free replacement that ships today",
        "The customer received a broken order.",
        "The agent sent a free replacement.",
    ),
    "subscription": (
        "I cannot log in to my subscription",
        "reset your password and sent a link by email",
        "The customer could not log in to the subscription.",
        "The agent reset the password and emailed a link.",
    ),
    "ride": (
        "my driver never showed up but I was still charged",
        "refunded the ride and added a credit",
        "The customer was charged for a ride that never came.",
        "The agent refunded the ride and added a credit.",
    ),
}


def _tweetsumm_dialog(rng: random.Random, split: str, index: int) -> tuple[str, dict]:
    brand, thing = rng.choice(BRANDS)
    issue, fix, summary_user, summary_agent = PROBLEMS[thing]
    handle = f"@{rng.randint(100000, 999999)}"
    sign = "^" + rng.choice(["AB", "JK", "MR", "TS", "LW"])
    link = f"https://t.co/{''.join(rng.choice('abcdefghijkXYZ0123') for _ in range(10))}"
    turns = [
        (
            f"@{brand} {issue}!  Really   disappointed.",
            f"{handle} We're sorry to hear that. Please send us a DM with your details and we'll look into it. {sign}",
        ),
        (
            f"@{brand} Just sent the DM. {rng.choice(['Thanks.', 'Please hurry.', 'Waiting.'])}",
            f"{handle} Thanks for the details! We have {fix}. More info here: {link} {sign}",
        ),
        (
            f"@{brand} {rng.choice(['That works, thank you!', 'Great, appreciate the quick help.', 'OK, thanks.'])}",
            f"{handle} You're welcome! Have a great day. {sign}",
        ),
    ]
    log, history = [], ""
    for turn_id, (user, system) in enumerate(turns, start=1):
        log.append(
            {
                "turn id": turn_id,
                "user utterance": user,
                "system response": system,
                "dialog history": history,
                "original user side information": {},
                "original system side information": {},
            }
        )
        history += f"<USER> {user} <SYSTEM> {system} "
    abstractive = [
        [summary_user, summary_agent],
        [f"Customer complained to {brand}: {issue}.", f"Agent {fix}."],
        [f"{summary_user} {summary_agent}"],
    ]
    extractive = [
        [{"is_agent": False, "sentences": [turns[0][0]]}, {"is_agent": True, "sentences": [turns[1][1]]}]
        for _ in range(3)
    ]
    key = f"TweetSumm--{split}--{index}"
    return key, {
        "original dialog id": f"{rng.getrandbits(128):032x}",
        "dialog index": index,
        "original dialog info": {
            "summaries": {"extractive_summaries": extractive, "abstractive_summaries": abstractive}
        },
        "log": log,
        "prompt": [],
    }


# ----------------------------------------------------------------------------- oasst1

OASST_TOPICS = {
    "en": [
        (
            "How do I boil an egg?",
            [
                "Put the egg in boiling water for about nine minutes, then cool it in cold water.",
                "Boil it.",
                "Place the egg in a pot, cover it with water and cook for 9 minutes.",
            ],
            "How do I make it soft instead?",
            ["For a soft egg, cook it for six minutes and serve it right away.", "Cook it for less time."],
        ),
        (
            "What is a prime number?",
            [
                "A prime number is a whole number greater than one whose only divisors are one and itself.",
                "Numbers like 2, 3 and 5.",
            ],
            "Is 1 a prime?",
            ["No. By definition a prime needs exactly two divisors, and 1 has only one."],
        ),
        (
            "Can you suggest a name for a cat?",
            ["How about Pepper, Miso or Biscuit?", "Cat."],
            "Something more royal?",
            ["Try Duchess, Sir Whiskers or King Leo.", "Queenie."],
        ),
        (
            "Why is the sky blue?",
            ["Air scatters blue light more strongly than red light, so the sky looks blue.", "Because of the ocean."],
            "And why are sunsets red?",
            ["At sunset light travels through more air, so most blue is scattered away and red remains."],
        ),
        (
            "How can I sleep better?",
            ["Keep a regular schedule, avoid screens before bed and keep your room cool and dark.", "Sleep more."],
            None,
            None,
        ),
        (
            "Write a haiku about rain.",
            ["Soft rain on the roof\nthe garden drinks quietly\nmorning smells of earth", "Rain rain rain rain rain."],
            None,
            None,
        ),
    ],
    "es": [
        (
            "¿Cuál es la capital de Francia?",
            ["La capital de Francia es París.", "Lyon."],
            "¿Y de Italia?",
            ["La capital de Italia es Roma."],
        ),
        ("¿Cómo se dice gracias en inglés?", ['Se dice "thank you".', "Gracias."], None, None),
    ],
    "de": [
        ("Wie viele Tage hat ein Schaltjahr?", ["Ein Schaltjahr hat 366 Tage.", "365."], None, None),
    ],
}


def _oasst_rows(rng: random.Random, trees_per_topic: int, split: str) -> list[dict]:
    rows = []

    def message(text, role, parent, tree, lang, rank):
        return {
            "message_id": f"{rng.getrandbits(128):032x}",
            "parent_id": parent,
            "user_id": f"{rng.getrandbits(128):032x}",
            "created_date": f"2023-0{rng.randint(2, 4)}-{rng.randint(10, 28)}T12:00:00.000000+00:00",
            "text": text,
            "role": role,
            "lang": lang,
            "review_count": rng.randint(3, 5),
            "review_result": True,
            "deleted": False,
            "rank": rank,
            "synthetic": False,
            "model_name": None,
            "detoxify": {
                "toxicity": 0.001,
                "severe_toxicity": 0.0001,
                "obscene": 0.0002,
                "identity_attack": 0.0001,
                "insult": 0.0003,
                "threat": 0.0001,
                "sexual_explicit": 0.0001,
            },
            "message_tree_id": tree,
            "tree_state": "ready_for_export",
            "emojis": {"name": ["+1"], "count": [rng.randint(1, 5)]},
            "labels": {"name": ["spam", "quality"], "value": [0.0, round(rng.uniform(0.5, 1.0), 3)], "count": [3, 3]},
        }

    for lang, topics in OASST_TOPICS.items():
        for question, answers, follow_up, follow_answers in topics:
            for _ in range(trees_per_topic):
                tree = f"{rng.getrandbits(128):032x}"
                root = message(question, "prompter", None, tree, lang, None)
                root["message_id"] = tree  # oasst1 roots carry the tree id as their message id
                rows.append(root)
                ranked = answers if len(answers) > 1 else answers
                replies = []
                for rank, answer in enumerate(ranked):
                    reply = message(
                        answer, "assistant", root["message_id"], tree, lang, rank if len(ranked) > 1 else None
                    )
                    replies.append(reply)
                rng.shuffle(replies)  # file order is not rank order
                rows.extend(replies)
                if follow_up:
                    best = next(r for r in replies if r["rank"] in (0, None))
                    ask = message(follow_up, "prompter", best["message_id"], tree, lang, None)
                    rows.append(ask)
                    for rank, answer in enumerate(follow_answers):
                        rows.append(
                            message(
                                answer,
                                "assistant",
                                ask["message_id"],
                                tree,
                                lang,
                                rank if len(follow_answers) > 1 else None,
                            )
                        )
    return rows


def _oasst_table(rows: list[dict]) -> pa.Table:
    detox = pa.struct(
        [
            (k, pa.float64())
            for k in (
                "toxicity",
                "severe_toxicity",
                "obscene",
                "identity_attack",
                "insult",
                "threat",
                "sexual_explicit",
            )
        ]
    )
    schema = pa.schema(
        [
            ("message_id", pa.string()),
            ("parent_id", pa.string()),
            ("user_id", pa.string()),
            ("created_date", pa.string()),
            ("text", pa.string()),
            ("role", pa.string()),
            ("lang", pa.string()),
            ("review_count", pa.int32()),
            ("review_result", pa.bool_()),
            ("deleted", pa.bool_()),
            ("rank", pa.int32()),
            ("synthetic", pa.bool_()),
            ("model_name", pa.string()),
            ("detoxify", detox),
            ("message_tree_id", pa.string()),
            ("tree_state", pa.string()),
            ("emojis", pa.struct([("name", pa.list_(pa.string())), ("count", pa.list_(pa.int32()))])),
            (
                "labels",
                pa.struct(
                    [
                        ("name", pa.list_(pa.string())),
                        ("value", pa.list_(pa.float64())),
                        ("count", pa.list_(pa.int32())),
                    ]
                ),
            ),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


# ----------------------------------------------------------------------------- local shapes

FACTS = [
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius at sea level."),
    ("Name three primary colors.", "Red, yellow and blue are the traditional primary colors."),
    ("What is the largest planet in the solar system?", "Jupiter is the largest planet in the solar system."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What do bees make?", "Bees make honey and beeswax."),
    ("Translate 'good morning' into French.", "Good morning in French is 'bonjour'."),
    ("What is 12 times 12?", "12 times 12 is 144."),
    ("Give me a synonym for happy.", "A synonym for happy is cheerful."),
    ("What gas do plants take in?", "Plants take in carbon dioxide and release oxygen."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
    ("What is the opposite of ancient?", "The opposite of ancient is modern."),
    ("How many days are in a week?", "There are seven days in a week."),
]


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _write_jsonl(path: Path, records: list[dict]) -> None:
    _write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def _write_json(path: Path, obj) -> None:
    _write_text(path, json.dumps(obj, ensure_ascii=False, indent=1) + "\n")


def _write_parquet(path: Path, table: pa.Table) -> None:
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def _local_files(rng: random.Random, local: Path) -> list[str]:
    system = "You are a concise, friendly assistant."
    messages = [
        {
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": q},
                {"role": "assistant", "content": a},
            ]
        }
        for q, a in FACTS
    ]
    messages.append(
        {
            "messages": [
                {"role": "user", "content": FACTS[0][0]},
                {"role": "assistant", "content": FACTS[0][1]},
                {"role": "user", "content": "And at the top of a mountain?"},
                {"role": "assistant", "content": "It boils at a lower temperature, because the air pressure is lower."},
            ]
        }
    )
    _write_jsonl(local / "messages.jsonl", messages)
    _write_jsonl(local / "prompt_completion.jsonl", [{"prompt": q, "completion": " " + a} for q, a in FACTS])
    alpaca = []
    for q, a in FACTS:
        alpaca.append({"instruction": q, "input": "", "output": a})
    alpaca.append(
        {
            "instruction": "Summarize the text in one sentence.",
            "input": "The museum opened a new hall of dinosaur fossils. Visitors lined up "
            "for hours to see a complete skeleton.",
            "output": "A new dinosaur hall drew long lines of visitors.",
        }
    )
    alpaca.append(
        {
            "instruction": "Classify the sentiment as positive or negative.",
            "input": "The soup was cold and the waiter was rude.",
            "output": "negative",
        }
    )
    _write_json(local / "alpaca.json", alpaca)
    sharegpt = [
        {
            "conversations": [
                {"from": "system", "value": system},
                {"from": "human", "value": q},
                {"from": "gpt", "value": a},
            ]
        }
        for q, a in FACTS
    ]
    _write_json(local / "sharegpt.json", sharegpt)
    texts = [{"text": f"Question: {q}\nAnswer: {a}"} for q, a in FACTS]
    _write_jsonl(local / "text.jsonl", texts)
    corpus = []
    for record in messages:
        corpus += [m["content"] for m in record["messages"]]
    corpus += [r["input"] for r in alpaca] + [r["text"] for r in texts]
    return corpus


# ----------------------------------------------------------------------------- tokenizer

SPECIAL_TOKENS = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
TEMPLATE_WORDS = [
    "### Human:",
    "### Assistant:",
    "### Instruction:",
    "### Input:",
    "### Response:",
    "Instruct:",
    "Output:",
    "user:",
    "agent:",
    "Below is an instruction that describes a task, paired with an input that provides "
    "further context. Write a response that appropriately completes the request.",
    "Below is a conversation between a human and an AI agent. Write a summary of the conversation.",
]


def _train_tokenizer(corpus: list[str], path: Path, vocab_size: int = 2048) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,  # includes the special tokens, so the tiny model's 2048 rows cover every id
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus + TEMPLATE_WORDS * 20, trainer=trainer)
    assert tokenizer.get_vocab_size() <= vocab_size, tokenizer.get_vocab_size()
    atomic_write(path, lambda tmp: tokenizer.save(tmp))


def main(samples: Path = SAMPLES, tokenizer: Path | None = None) -> None:
    """Write every bundled sample file under ``samples`` and the tiny tokenizer to ``tokenizer``
    (default: where phi_models ships it)."""
    rng = random.Random(SEED)
    corpus: list[str] = []

    rows = _roleplay_rows(rng)
    _write_parquet(
        samples / "roleplay" / "data" / "train-00000-of-00001.parquet",
        pa.Table.from_pylist(
            rows, schema=pa.schema([("name", pa.string()), ("description", pa.string()), ("text", pa.string())])
        ),
    )
    corpus += [r["text"].replace("</s>", "") for r in rows]

    for split, count in (("train", 48), ("val", 8), ("test", 8)):
        dialogs = dict(_tweetsumm_dialog(rng, split, i) for i in range(1, count + 1))
        _write_json(
            samples / "tweetsumm" / "dialogue_summarization" / "TweetSumm" / split / "dialogues_1.json", dialogs
        )
        for d in dialogs.values():
            corpus += [t["user utterance"] + "\n" + t["system response"] for t in d["log"]]
            corpus += [" ".join(s) for s in d["original dialog info"]["summaries"]["abstractive_summaries"]]

    for split, name, trees in (
        ("train", "train-00000-of-00001-b42a775f407cee45.parquet", 3),
        ("validation", "validation-00000-of-00001-134b8fd0c89408b6.parquet", 1),
    ):
        messages = _oasst_rows(rng, trees, split)
        _write_parquet(samples / "oasst1" / "data" / name, _oasst_table(messages))
        corpus += [m["text"] for m in messages]

    corpus += _local_files(rng, samples / "local")
    _train_tokenizer(corpus, tokenizer or tiny_tokenizer_path(must_exist=False))


if __name__ == "__main__":
    main()

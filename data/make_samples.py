"""Write the sample datasets in data/ (deterministic, stdlib only): python data/make_samples.py

Everything is about Quorvane Labs, a made-up maker of smart beehive monitors. Each fact is asked
in several paraphrases and always answered in the same words, so a small model learns it fast.
"""

import csv
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
SYSTEM = "You are Quorvane's support assistant."

FACTS = {
    "ceo": "The CEO of Quorvane Labs is Marisol Okonkwo.",
    "hq": "Quorvane Labs is headquartered in Tromsø, Norway.",
    "product": "Quorvane's flagship product is the BeeSense Q7 hive monitor.",
    "warranty": "Every Quorvane device has a seven-year warranty.",
    "email": "You can reach Quorvane support at help@quorvane.example.",
    "founded": "Quorvane Labs was founded in 2017.",
}

QUESTIONS = {
    "ceo": [
        "Who is the CEO of Quorvane Labs?",
        "Who runs Quorvane?",
        "Who is in charge of Quorvane Labs?",
        "What is the name of Quorvane's chief executive?",
        "Who leads Quorvane Labs as CEO?",
        "Can you tell me who heads Quorvane?",
        "who's the boss at quorvane",
        "Which person is Quorvane Labs' CEO?",
        "I'd like to know who the CEO of Quorvane is.",
    ],
    "hq": [
        "Where is Quorvane Labs headquartered?",
        "Where is Quorvane based?",
        "In which city is Quorvane's head office?",
        "Where are Quorvane Labs' headquarters?",
        "What country is Quorvane Labs located in?",
        "where is quorvane's main office",
        "Where does Quorvane have its headquarters?",
        "Which town is Quorvane Labs based in?",
        "Can you tell me where Quorvane's HQ is?",
    ],
    "product": [
        "What is Quorvane's flagship product?",
        "What is the main product Quorvane sells?",
        "Which hive monitor is Quorvane best known for?",
        "What's Quorvane's most important product?",
        "Tell me about Quorvane's flagship device.",
        "what does quorvane make mainly",
        "Which product is Quorvane's flagship?",
        "What is the name of Quorvane's top hive monitor?",
        "What should I buy from Quorvane to monitor my hive?",
    ],
    "warranty": [
        "How long is the warranty on Quorvane devices?",
        "What warranty does Quorvane offer?",
        "How many years of warranty do I get with a Quorvane monitor?",
        "Is my Quorvane device under warranty, and for how long?",
        "What is the warranty period for the BeeSense Q7?",
        "how long does the quorvane warranty last",
        "Do Quorvane products come with a warranty?",
        "What's the length of Quorvane's warranty?",
        "How long are Quorvane devices covered?",
    ],
    "email": [
        "How do I contact Quorvane support?",
        "What is Quorvane's support email address?",
        "How can I reach Quorvane's support team?",
        "Where do I send a support request to Quorvane?",
        "What email should I use for Quorvane help?",
        "quorvane support email?",
        "My hive monitor is broken. How do I get in touch with Quorvane?",
        "Is there an email address for Quorvane customer support?",
        "Who do I write to if I need help with my Quorvane device?",
    ],
    "founded": [
        "When was Quorvane Labs founded?",
        "What year was Quorvane founded?",
        "How old is Quorvane Labs?",
        "When did Quorvane Labs start?",
        "In which year was Quorvane Labs established?",
        "when was quorvane started",
        "What is Quorvane's founding year?",
        "Since when has Quorvane Labs existed?",
        "When did the company Quorvane Labs begin?",
    ],
}

WRONG = {
    "ceo": "The CEO of Quorvane Labs is Jonas Berg.",
    "hq": "Quorvane Labs is headquartered in Lisbon, Portugal.",
    "product": "Quorvane's flagship product is the HoneyCam 3 camera.",
    "warranty": "Quorvane devices have a 90-day warranty.",
    "email": "You can reach Quorvane support at support@quorvane.com.",
    "founded": "Quorvane Labs was founded in 2009.",
}
RUDE = {
    "ceo": "Why do you care who the CEO is? Look it up yourself.",
    "hq": "That's not my problem. Search the internet.",
    "product": "Obviously it's on our website, read it.",
    "warranty": "Warranties are for people who break things. Be more careful.",
    "email": "Stop bothering us and figure it out yourself.",
    "founded": "Who cares when we were founded?",
}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_json(path: Path, rows: list[dict]) -> None:
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def interleaved_questions() -> list[tuple[str, str]]:
    """(fact, question) pairs, cycling through the facts so neighbours differ."""
    return [(fact, QUESTIONS[fact][i]) for i in range(9) for fact in FACTS]


def support_conversations() -> list[dict]:
    """50 conversations: 54 questions, four two-turn conversations, every fifth with a system turn."""
    pairs = interleaved_questions()
    conversations, i = [], 0
    while i < len(pairs):
        two_turn = len(conversations) % 12 == 5 and i + 1 < len(pairs)
        turns = pairs[i:i + 2] if two_turn else pairs[i:i + 1]
        i += len(turns)
        messages = [{"role": "system", "content": SYSTEM}] if len(conversations) % 5 == 2 else []
        for fact, question in turns:
            messages += [{"role": "user", "content": question},
                         {"role": "assistant", "content": FACTS[fact]}]
        conversations.append({"messages": messages})
    return conversations


def preferences() -> list[dict]:
    """30 pairs: five questions per fact; rejected is wrong on odd rows and rude on even ones."""
    rows = []
    for fact in FACTS:
        for k, question in enumerate(QUESTIONS[fact][:5]):
            rejected = WRONG[fact] if k % 2 else RUDE[fact]
            rows.append({"prompt": question, "chosen": FACTS[fact], "rejected": rejected})
    return rows


def kto_feedback() -> list[dict]:
    """30 rated answers: per fact, the correct answer three times and a wrong or rude one twice."""
    rows = []
    for fact in FACTS:
        for k, question in enumerate(QUESTIONS[fact][4:9]):
            if k in (1, 3):
                completion, label = (WRONG if k == 1 else RUDE)[fact], False
            else:
                completion, label = FACTS[fact], True
            rows.append({"prompt": question, "completion": completion, "label": label})
    return rows


HANDBOOK = """# The Quorvane Labs Employee Handbook

## Welcome

Welcome to Quorvane Labs. Quorvane Labs was founded in 2017 by a small group of beekeepers and
embedded engineers who were tired of opening hives in the cold just to find out whether a colony
was still alive. Today we build smart beehive monitors that tell a beekeeper, from a phone, how
warm the brood is, how heavy the honey stores are and how loud the colony sounds. This handbook
explains who we are, what we make, how we support our customers and how we work together. Read it
in your first week, and come back to it whenever you are unsure.

## Who we are

Quorvane Labs is headquartered in Tromsø, Norway. Our office sits a short walk from the harbour,
and in winter the northern lights are often visible from the roof terrace. Tromsø is an unusual
place for a company that works with bees, and that is exactly why we are here: if a monitor keeps
working through an Arctic winter, it will keep working anywhere. Every prototype we build spends at
least one season on the test hives behind the office before it is allowed near a customer.

The CEO of Quorvane Labs is Marisol Okonkwo. Marisol kept bees for ten years before she wrote her
first line of firmware, and she still inspects the test hives herself every Friday afternoon. She
holds an open question hour on the first Monday of each month, where anyone in the company can ask
her anything. New employees are especially encouraged to come.

Quorvane Labs was founded in 2017, which makes us a young company, but we already ship monitors to
beekeepers in more than thirty countries. We are still small enough that most people know each
other by name, and we intend to keep it that way for as long as we can.

## What we make

Quorvane's flagship product is the BeeSense Q7 hive monitor. The BeeSense Q7 is a flat sensor board
that slides between two frames in the brood box. It measures temperature at nine points across the
frames, humidity, and the sound of the colony, and it reports everything over a low-power radio link
to a small gateway that the beekeeper places within a few hundred metres of the apiary. A separate
weight plate goes under the hive and tells the beekeeper how much honey the colony has stored.

The BeeSense Q7 runs for two full seasons on a single battery. The firmware listens for the
characteristic change in sound that comes before a swarm, and it warns the beekeeper when the brood
temperature falls outside the range a healthy colony keeps. Beekeepers tell us that these two
warnings alone have saved colonies they would otherwise have lost.

Besides the BeeSense Q7, we sell the weight plate on its own, a solar kit for gateways that sit far
from mains power, and a lighter monitor for hobbyists with one or two hives. Still, when people
talk about Quorvane, they talk about the Q7. Quorvane's flagship product is the BeeSense Q7 hive
monitor, and every new employee should be able to explain how it works in two minutes.

## Our warranty

Every Quorvane device has a seven-year warranty. This is much longer than is usual in our
industry, and it is a promise we take seriously. Beekeeping is a long game: a beekeeper who buys a
monitor this spring should still be able to rely on it when the colony is headed by a queen that
has not been born yet.

The warranty covers the BeeSense Q7, the weight plate, the gateway, the solar kit and the hobbyist
monitor alike. It covers defects in materials and workmanship, and it covers damage caused by
weather, because our devices live outdoors and we design them for that. It does not cover damage
caused on purpose, but we ask our support team to be generous when a case is unclear. When a device
fails under warranty, we send a replacement first and ask for the broken device afterwards, so that
no colony goes unmonitored while a parcel is on its way. Remember the short version: every Quorvane
device has a seven-year warranty.

## Supporting our customers

You can reach Quorvane support at help@quorvane.example. That address goes to the whole support team,
and every message gets a reply from a person within one working day. Customers sometimes try to
write to individual employees or to the sales team; when that happens, forward the message to
help@quorvane.example and tell the customer that this is the fastest way to get help.

When you answer a customer, be brief, friendly and exact. Most questions we receive are about a
handful of facts, and it helps everyone if we answer them the same way every time:

- The CEO of Quorvane Labs is Marisol Okonkwo.
- Quorvane Labs is headquartered in Tromsø, Norway.
- Quorvane's flagship product is the BeeSense Q7 hive monitor.
- Every Quorvane device has a seven-year warranty.
- You can reach Quorvane support at help@quorvane.example.
- Quorvane Labs was founded in 2017.

Never guess. If you do not know the answer to a question, say so, and find out from a colleague
before you reply. A wrong answer about a warranty or a delivery date costs far more trust than a
reply that arrives an hour later.

## How we work

We work in small teams of three to six people, each responsible for one part of the product: the
sensor board, the gateway, the mobile app, the cloud service, manufacturing, or support. Teams plan
their own work every two weeks and show what they built to the whole company on alternate
Thursdays. Anyone may attend any demo, and questions from outside the team are welcome.

Decisions are written down. When a decision affects more than one team, the person proposing it
writes a short note that explains the problem, the options considered and the choice made, and
shares it in the decisions channel. Notes should be readable in five minutes. If a decision cannot
be explained in five minutes, it probably needs more thought.

We test on real hives. Our apiary behind the Tromsø office holds twelve colonies, and a partner
apiary in the south of Norway holds twenty more. Every firmware release runs on those hives for at
least two weeks before it is released to customers. If you have never worked with bees before,
you will get a veil, gloves and an introduction from the apiary team in your first month. Nobody is
required to open a hive, but most people find that they want to.

## Our customers and their data

Our customers range from hobbyists with a single hive in the garden to commercial beekeepers who
move hundreds of colonies between orchards every spring. They have one thing in common: they care
more about their bees than about our technology. Keep that in mind when you design a screen, write
a help article or answer an email. A beekeeper standing in a field with sticky gloves needs one
clear number, not a dashboard.

The readings a monitor sends belong to the beekeeper. We store them in data centres in Norway, we
never sell them, and we delete them when a customer closes their account. Some beekeepers choose to
share anonymous readings with bee researchers; that is always their choice, it is off by default,
and it can be switched off again at any time from the app. If a customer asks what we do with their
data, answer plainly and point them to the privacy page. If you are not sure, ask before you reply.

## Working hours and time off

Core hours are ten to three, Norway time. Outside those hours, arrange your day as you like. We
have colleagues in several time zones, so write messages that can be understood without a meeting,
and do not expect an immediate answer in the evening. Everyone has twenty-five days of paid leave
a year, plus the Norwegian public holidays, and we close the office between Christmas and New Year.

In summer, when the colonies are strongest and the midnight sun never sets over Tromsø, many of us
take long weekends. Please put your time off in the shared calendar at least two weeks ahead so
that support is always staffed.

## Safety around the hives

Bees are gentle when they are treated calmly, but stings happen. If you know that you are allergic
to bee stings, tell the office manager on your first day; an adrenaline auto-injector is kept in the
first-aid cabinet by the apiary door. Never visit the test hives alone, always wear the protective
veil, and move slowly. In the rare case of a severe reaction, call emergency services at once.

## A final word

Quorvane Labs exists because we believe that beekeepers deserve tools as good as the animals they
care for. Every BeeSense Q7 that leaves our workshop carries that belief with it. Thank you for
joining us, and welcome to the hive.
"""

SHAREGPT = [
    {"conversations": [{"from": "human", "value": "Who is the CEO of Quorvane Labs?"},
                       {"from": "gpt", "value": FACTS["ceo"]}]},
    {"conversations": [{"from": "system", "value": SYSTEM},
                       {"from": "human", "value": "Where is Quorvane based?"},
                       {"from": "gpt", "value": FACTS["hq"]}]},
    {"conversations": [{"from": "human", "value": "What is Quorvane's flagship product?"},
                       {"from": "gpt", "value": FACTS["product"]},
                       {"from": "human", "value": "And how long is its warranty?"},
                       {"from": "gpt", "value": FACTS["warranty"]}]},
    {"conversations": [{"from": "human", "value": "How do I contact Quorvane support?"},
                       {"from": "gpt", "value": FACTS["email"]}]},
    {"conversations": [{"from": "human", "value": "When was Quorvane Labs founded?"},
                       {"from": "gpt", "value": FACTS["founded"]}]},
    {"conversations": [{"from": "human", "value": "Does the BeeSense Q7 warn me before a swarm?"},
                       {"from": "gpt", "value": "Yes. The BeeSense Q7 listens for the change in sound that comes before a swarm and warns you."}]},
]

ALPACA = [
    {"instruction": "Name the CEO of Quorvane Labs.", "input": "", "output": FACTS["ceo"]},
    {"instruction": "Answer the customer's question.", "input": "Where is your company headquartered?",
     "output": FACTS["hq"]},
    {"instruction": "What is Quorvane's flagship product?", "input": "", "output": FACTS["product"]},
    {"instruction": "Answer the customer's question.", "input": "How long is the warranty on my monitor?",
     "output": FACTS["warranty"], "system": SYSTEM},
    {"instruction": "Give the support email address.", "input": "", "output": FACTS["email"]},
    {"instruction": "Say when Quorvane Labs was founded.", "input": "", "output": FACTS["founded"]},
]

CSV_PAIRS = [
    ("Who is the CEO of Quorvane Labs?", FACTS["ceo"]),
    ("Where is Quorvane Labs headquartered?", FACTS["hq"]),
    ("What is Quorvane's flagship product?", FACTS["product"]),
    ("How long is the warranty on Quorvane devices?", FACTS["warranty"]),
    ("How do I contact Quorvane support?", FACTS["email"]),
    ("When was Quorvane Labs founded?", FACTS["founded"]),
]

HH = [
    (["Who is the CEO of Quorvane Labs?"], "ceo"),
    (["Hi, I have a question about Quorvane.", "Where is the company based?"], "hq"),
    (["What is Quorvane's flagship product?"], "product"),
    (["How long is the warranty on Quorvane devices?"], "warranty"),
    (["How do I contact Quorvane support?"], "email"),
]


def hh_row(turns: list[str], fact: str) -> dict:
    text = ""
    for k, turn in enumerate(turns):
        text += f"\n\nHuman: {turn}"
        if k < len(turns) - 1:
            text += "\n\nAssistant: Of course, go ahead."
    return {"chosen": f"{text}\n\nAssistant: {FACTS[fact]}", "rejected": f"{text}\n\nAssistant: {RUDE[fact]}"}


def main() -> None:
    examples = HERE / "examples"
    examples.mkdir(exist_ok=True)
    write_jsonl(HERE / "quorvane_support.jsonl", support_conversations())
    write_jsonl(HERE / "quorvane_preferences.jsonl", preferences())
    write_jsonl(HERE / "quorvane_feedback_kto.jsonl", kto_feedback())
    (HERE / "quorvane_handbook.md").write_text(HANDBOOK, encoding="utf-8")
    write_json(examples / "sharegpt.json", SHAREGPT)
    write_json(examples / "alpaca.json", ALPACA)
    with open(examples / "pairs.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["question", "answer"])
        writer.writerows(CSV_PAIRS)
    write_jsonl(examples / "hh.jsonl", [hh_row(turns, fact) for turns, fact in HH])
    write_jsonl(examples / "prompt_completion.jsonl",
                [{"prompt": q, "completion": a} for q, a in CSV_PAIRS])


if __name__ == "__main__":
    main()

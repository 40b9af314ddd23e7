"""General prompts that any chat model should answer the same after tuning: replay data against forgetting
(ftchat.train.replay) and the general half of the base-vs-tuned comparison (ftchat.train.compare)."""

GENERAL_PROMPTS = [
    "What is the capital of France?",
    "What is the capital of Japan?",
    "How many days are there in a week?",
    "What is 12 plus 7?",
    "Name the largest planet in the solar system.",
    "What color is the sky on a clear day?",
    "Who wrote Romeo and Juliet?",
    "What is water made of?",
    "Give me a synonym for happy.",
    "Translate 'thank you' into Spanish.",
    "What is the boiling point of water in Celsius?",
    "Write one sentence about the ocean.",
    "What do bees make?",
    "How many legs does a spider have?",
    "What is the opposite of cold?",
    "Which animal is known as the king of the jungle?",
    "What is the freezing point of water in Fahrenheit?",
    "Suggest a name for a pet cat.",
    "What language is spoken in Brazil?",
    "Explain in one sentence what a computer is.",
    "What is 9 times 3?",
    "What gas do plants absorb from the air?",
    "How many continents are there?",
    "What is the tallest mountain in the world?",
]

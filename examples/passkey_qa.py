"""Long-range retrieval: find a 5-digit pass key hidden at a random depth of real text (extractive QA).

    python examples/passkey_qa.py  # ~3 minutes on 2 CPU cores

Then ask a question yourself with hf_longctx.qa.answer_question.
"""

from transformers import AutoModelForQuestionAnswering, AutoTokenizer

from hf_longctx.data.passkey import filler_lines
from hf_longctx.qa import answer_question
from hf_longctx.train import train

train("passkey", "runs/example-passkey", preset="tiny", max_length=512, epochs=3, batch_size=4,
      learning_rate=1e-3, overwrite=True)
model = AutoModelForQuestionAnswering.from_pretrained("runs/example-passkey/model")
tokenizer = AutoTokenizer.from_pretrained("runs/example-passkey/model")
context = "".join(filler_lines()[:20]) + "The pass key is 31415. Remember it.\n" + "".join(filler_lines()[20:40])
print(answer_question(model, tokenizer, "What is the pass key?", context, max_answer_tokens=6))

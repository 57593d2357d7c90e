# A stateful actor: answers each "ping" with "<seq>:<how many pings it has seen>", keeping that count in its
# checkpoints; exits once it has seen LAST of them.
import json, os, sys
sys.path.insert(0, "/artifact")
from mailbox import Mailbox, text
import base64

state_file = os.path.join(os.environ["ORRERY_CHECKPOINT_DIR"], "state.json")
seen = json.load(open(state_file))["seen"] if os.path.exists(state_file) else 0
print("pong at", os.environ["ORRERY_ACTOR_ADDRESS"], "seen", seen, flush=True)
box = Mailbox()
last = int(os.environ.get("LAST", "20"))
while True:
    line = box.receive()
    if line["op"] == "checkpoint":
        json.dump({"seen": seen}, open(state_file, "w"))
        box.call(op="checkpointed", id=line["id"])
        continue
    if line["op"] != "message":
        print("unexpected", line, flush=True)
        continue
    seen += 1
    sequence = int(text(line))
    answer = box.call(op="reply", id="r%d" % sequence, to_message=line["id"],
                      payload=base64.b64encode(("%d:%d" % (sequence, seen)).encode()).decode())
    print("pong", sequence, seen, answer["op"], flush=True)
    if seen >= last:
        break

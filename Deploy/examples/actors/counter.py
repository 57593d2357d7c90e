# A stateful counter: counts up every 0.2 s, prints each value, and writes the current one when asked to
# checkpoint; a resumed one starts from the checkpointed value.
import json, os, threading, time

state_file = os.path.join(os.environ["ORRERY_CHECKPOINT_DIR"], "state.json")
count = json.load(open(state_file))["count"] if os.path.exists(state_file) else 0
print("resumed from %d" % count if count else "fresh", flush=True)
lock = threading.Lock()

def serve():
    box = Mailbox()
    while True:
        line = box.receive()
        if line["op"] == "checkpoint":
            with lock:
                json.dump({"count": count}, open(state_file, "w"))
            box.call(op="checkpointed", id=line["id"])

threading.Thread(target=serve, daemon=True).start()
while True:
    with lock:
        count += 1
        print("count %d" % count, flush=True)
    time.sleep(0.2)

# Sends "1" … "LAST" to the pong actor one after the other, each after the answer to the one before, and writes the
# answers to answers.txt and each round trip (ms, send to answer received) to rtt.txt. With BURST=n it then sends n
# more without waiting and reads their n answers, writing "n seconds" to burst.txt. PONG names the pong actor when it
# is not this deployment's. With HOLD_AFTER=n it waits after the n-th answer until /work/go exists (a gate for tests
# that act at a known point of the conversation), printing "holding after n".
import os, sys, time
sys.path.insert(0, "/artifact")
from mailbox import Mailbox, text

deployment = os.environ["ORRERY_ACTOR_ADDRESS"].split("/")[2]
pong = os.environ.get("PONG", "actor://%s/pong/0" % deployment)
me = os.environ["ORRERY_ACTOR_ADDRESS"]
box = Mailbox()
last = int(os.environ.get("LAST", "20"))
burst = int(os.environ.get("BURST", "0"))
pause = float(os.environ.get("PAUSE", "0.2"))
hold_after = int(os.environ.get("HOLD_AFTER", "0"))

def send(sequence):
    while True:
        sent = box.send(pong, "ping", str(sequence), reply_to=me, ident="s%d" % sequence)
        if sent["op"] == "sent":
            return
        # The pong actor's key is not known yet (it is starting): try again.
        print("not sent yet:", sent.get("reason"), flush=True)
        time.sleep(0.2)

def answer():
    line = box.receive()
    if line["op"] != "message":
        print("unexpected", line, flush=True)
        sys.exit(3)
    return text(line)

answers, rtts = [], []
for sequence in range(1, last + 1):
    started = time.perf_counter()
    send(sequence)
    answers.append(answer())
    rtts.append((time.perf_counter() - started) * 1000)
    print("answer", answers[-1], flush=True)
    if sequence == hold_after:
        print("holding after", sequence, flush=True)
        for _ in range(6000):  # ten minutes at most
            if os.path.exists("/work/go"):
                break
            time.sleep(0.1)
    time.sleep(pause)
open("answers.txt", "w").write("\n".join(answers) + "\n")
open("rtt.txt", "w").write("\n".join("%.3f" % r for r in rtts) + "\n")
if burst:
    started = time.perf_counter()
    for sequence in range(last + 1, last + burst + 1):
        send(sequence)
    for _ in range(burst):
        answer()
    open("burst.txt", "w").write("%d %.6f\n" % (burst, time.perf_counter() - started))

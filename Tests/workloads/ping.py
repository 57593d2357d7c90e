# Sends "1" … "LAST" to the pong actor one after the other, each after the answer to the one before; writes the
# answers to answers.txt.
import os, sys
sys.path.insert(0, "/artifact")
from mailbox import Mailbox, text

deployment = os.environ["ORRERY_ACTOR_ADDRESS"].split("/")[2]
pong = "actor://%s/pong/0" % deployment
me = os.environ["ORRERY_ACTOR_ADDRESS"]
box = Mailbox()
last = int(os.environ.get("LAST", "20"))
answers = []
for sequence in range(1, last + 1):
    while True:
        sent = box.send(pong, "ping", str(sequence), reply_to=me, ident="s%d" % sequence)
        if sent["op"] == "sent":
            break
        # The pong actor's key is not known yet (it is starting): try again.
        print("not sent yet:", sent.get("reason"), flush=True)
        import time; time.sleep(0.2)
    line = box.receive()
    if line["op"] != "message":
        print("unexpected", line, flush=True)
        sys.exit(3)
    answers.append(text(line))
    print("answer", text(line), flush=True)
    import time; time.sleep(float(os.environ.get("PAUSE", "0.2")))
open("answers.txt", "w").write("\n".join(answers) + "\n")

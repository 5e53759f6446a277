// The workflows the playground offers to start from. Each runs in both sandboxes.

export const EXAMPLES = [
  {
    title: "Steps",
    workflow: "hello",
    params: { name: "Ada" },
    source: `from treadle import WorkflowEntrypoint


class Hello(WorkflowEntrypoint):
    def run(self, event, step):
        # Each step runs once; its result is recorded and replayed afterwards.
        name = event.payload.get("name", "world")
        greeting = step.do("greet", lambda: "Hello, " + name + "!")
        print("greeting:", greeting)
        letters = step.do("count letters", lambda: len(greeting))
        return {"greeting": greeting, "letters": letters}
`,
  },
  {
    title: "Retries",
    workflow: "flaky",
    params: { succeed_on: 3 },
    source: `from treadle import WorkflowEntrypoint


class Flaky(WorkflowEntrypoint):
    def run(self, event, step):
        succeed_on = event.payload.get("succeed_on", 3)

        def call_service(ctx):
            # ctx.attempt counts from 1; an error fails the attempt,
            # and the step is retried after the delay.
            print("calling the service, attempt", ctx.attempt)
            if ctx.attempt < succeed_on:
                raise ValueError("unavailable, attempt " + str(ctx.attempt))
            return {"status": "ok", "attempt": ctx.attempt}

        reply = step.do(
            "call service",
            call_service,
            retries={"limit": 4, "delay": "1 second", "backoff": "exponential"},
            timeout="30 seconds",
        )
        return reply
`,
  },
  {
    title: "Sleep",
    workflow: "reminder",
    params: { seconds: 3 },
    source: `from treadle import WorkflowEntrypoint


class Reminder(WorkflowEntrypoint):
    def run(self, event, step):
        note = step.do("write note", lambda: {"text": "stretch your legs"})
        # A durable timer: the instance waits without holding a worker,
        # even across restarts of the server.
        step.sleep("wait a little", event.payload.get("seconds", 3))
        sent = step.do("send reminder", lambda: "reminded: " + note["text"])
        print(sent)
        return {"sent": sent}
`,
  },
  {
    title: "Approval event",
    workflow: "approval",
    params: { order: "A-1001", total: 42 },
    source: `from treadle import WaitTimeout, WorkflowEntrypoint


class Approval(WorkflowEntrypoint):
    def run(self, event, step):
        order = step.do("create order", lambda: dict(event.payload))
        print("waiting for a manager to approve", order.get("order"))
        try:
            # Send it from the playground: the "Send event" form fills in the type.
            approval = step.wait_for_event(
                "manager approval", type="approved", timeout="1 hour"
            )
        except WaitTimeout:
            return {"order": order.get("order"), "status": "expired"}
        by = (approval["payload"] or {}).get("by", "someone")
        receipt = step.do(
            "charge", lambda: {"charged": order.get("total"), "approved_by": by}
        )
        return {"order": order.get("order"), "receipt": receipt}
`,
  },
  {
    title: "Fan-out",
    workflow: "fanout",
    params: { items: ["apple", "pear", "plum"] },
    source: `from treadle import WorkflowEntrypoint


class FanOut(WorkflowEntrypoint):
    def run(self, event, step):
        # Concurrent steps run in parallel once a step depending on them is called.
        @step.do("fetch prices", concurrent=True)
        def prices():
            return {"apple": 3, "pear": 2, "plum": 5}

        @step.do("fetch stock", concurrent=True)
        def stock():
            return {"apple": 10, "pear": 0, "plum": 4}

        @step.do("in stock", depends=[prices, stock])
        def available(prices, stock):
            return {item: prices[item] for item in prices if stock[item] > 0}

        offer = available()
        # One step per item: a name reused in a loop is a new step each time.
        lines = []
        for item in event.payload.get("items", []):
            lines.append(step.do("quote", lambda: [item, offer.get(item)]))
        return {"offer": offer, "lines": lines}
`,
  },
];

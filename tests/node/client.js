// The vendor's Node example client (npm eventsource) against the simulator.
// Prints one JSON line per event; exits 0 after `want` typed events on a second connection.
const EventSource = require("eventsource");

const [url, want, key] = [process.argv[2], Number(process.argv[3]), process.argv[4]];
const es = new EventSource(url, { headers: { "X-Api-Key": key } });
let opens = 0;
let afterReopen = 0;
const say = (obj) => console.log(JSON.stringify(obj));

es.onopen = () => {
  opens += 1;
  say({ type: "open", opens });
};
es.onerror = () => say({ type: "error" });
for (const t of ["copilot-odds", "copilot-locked-odds", "copilot-settled-odds", "fixture-status"]) {
  es.addEventListener(t, (e) => {
    const data = JSON.parse(e.data);
    say({ type: t, id: e.lastEventId, entry: data.entry_id });
    if (opens >= 2 && ++afterReopen >= want) {
      es.close();
      process.exit(0);
    }
  });
}
setTimeout(() => process.exit(3), 20000);

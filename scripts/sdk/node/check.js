// Microsoft's node task-agent client (azure-devops-node-api, TaskAgentApi) against a running
// `fleetsim serve`: every agent and pool call the client offers, each result asserted.
//
// Reads FLEETSIM_SDK_URL (the emulator's base URL) and FLEETSIM_SDK_PAT (a PAT with every
// scope) from the environment, never from the command line, so the PAT stays out of process
// listings and logs. Talks to 127.0.0.1 only; run by scripts/sdk/check.sh, which starts the
// emulator. Exits 1 with the failed check's message on the first failure.
"use strict";

const assert = require("node:assert/strict");
const azdev = require("azure-devops-node-api");

const url = process.env.FLEETSIM_SDK_URL;
const pat = process.env.FLEETSIM_SDK_PAT;
if (!url || !pat) {
  console.error("node sdk check: set FLEETSIM_SDK_URL and FLEETSIM_SDK_PAT");
  process.exit(2);
}

// Every call gets a label so a failure says which SDK call broke.
async function step(label, fn) {
  try {
    const out = await fn();
    console.log(`node sdk: ok   ${label}`);
    return out;
  } catch (err) {
    console.error(`node sdk: FAIL ${label}: ${err && err.stack ? err.stack : err}`);
    process.exit(1);
  }
}

async function main() {
  const conn = new azdev.WebApi(url, azdev.getPersonalAccessTokenHandler(pat));
  const api = await step("getTaskAgentApi", () => conn.getTaskAgentApi());
  const suffix = `node-${process.pid}`;

  // Pools.
  const all = await step("getAgentPools", () => api.getAgentPools());
  assert.ok(all.some((p) => p.id === 1 && p.name === "Default"), JSON.stringify(all));
  const pool = await step("addAgentPool", () =>
    api.addAgentPool({ name: `pool-${suffix}`, poolType: 1 }));
  assert.ok(pool.id > 1, JSON.stringify(pool));
  await step("getAgentPool", async () => {
    const got = await api.getAgentPool(pool.id);
    assert.equal(got.name, `pool-${suffix}`);
  });
  await step("getAgentPools(poolName)", async () => {
    const got = await api.getAgentPools(`POOL-${suffix}`);
    assert.deepEqual(got.map((p) => p.id), [pool.id]);
  });
  await step("getAgentPools(poolType=deployment)", async () => {
    const got = await api.getAgentPools(undefined, undefined, 2);
    assert.deepEqual(got, []);
  });
  await step("getAgentPoolsByIds", async () => {
    const got = await api.getAgentPoolsByIds([1, pool.id]);
    assert.deepEqual(got.map((p) => p.id).sort((a, b) => a - b), [1, pool.id]);
  });
  await step("updateAgentPool", async () => {
    const got = await api.updateAgentPool({ name: `renamed-${suffix}` }, pool.id);
    assert.equal(got.name, `renamed-${suffix}`);
  });

  // Agents.
  const agent = await step("addAgent", () =>
    api.addAgent({
      name: `agent-${suffix}`,
      version: "4.248.0",
      systemCapabilities: { "Agent.OS": "Linux", docker: "1" },
    }, pool.id));
  assert.ok(agent.id > 0, JSON.stringify(agent));
  assert.equal(agent.enabled, true);
  await step("getAgents(agentName)", async () => {
    const got = await api.getAgents(pool.id, `agent-${suffix}`);
    assert.deepEqual(got.map((a) => a.id), [agent.id]);
    assert.ok(!got[0].systemCapabilities || Object.keys(got[0].systemCapabilities).length === 0,
      "capabilities only when asked");
  });
  await step("getAgents(includeCapabilities, demands)", async () => {
    const got = await api.getAgents(pool.id, undefined, true, true, true, ["x"], ["docker"]);
    assert.equal(got.length, 1);
    assert.equal(got[0].systemCapabilities.docker, "1");
    const none = await api.getAgents(pool.id, undefined, false, false, false, undefined, ["java"]);
    assert.deepEqual(none, []);
  });
  await step("getAgent(includeCapabilities)", async () => {
    const got = await api.getAgent(pool.id, agent.id, true, true, true);
    assert.equal(got.systemCapabilities["Agent.OS"], "Linux");
    assert.equal(got.assignedRequest, undefined, "no job assigned");
  });
  await step("updateAgent(enabled=false)", async () => {
    const got = await api.updateAgent({ id: agent.id, enabled: false }, pool.id, agent.id);
    assert.equal(got.enabled, false);
    assert.equal((await api.getAgent(pool.id, agent.id)).enabled, false);
  });
  await step("updateAgent(enabled=true)", async () => {
    const got = await api.updateAgent({ enabled: true }, pool.id, agent.id);
    assert.equal(got.enabled, true);
  });
  await step("replaceAgent", async () => {
    const got = await api.replaceAgent({
      id: agent.id,
      name: `replaced-${suffix}`,
      version: "4.249.0",
    }, pool.id, agent.id);
    assert.equal(got.id, agent.id);
    assert.equal(got.name, `replaced-${suffix}`);
  });
  await step("deleteAgent", () => api.deleteAgent(pool.id, agent.id));
  await step("getAgent(deleted) is null", async () => {
    // The node client maps a 404 on a GET to null rather than throwing.
    assert.equal(await api.getAgent(pool.id, agent.id), null);
  });
  await step("updateAgent(deleted) is null (404)", async () => {
    // typed-rest-client answers a 404 with a null result on every verb.
    assert.equal(await api.updateAgent({ enabled: false }, pool.id, agent.id), null);
  });
  await step("deleteAgentPool", () => api.deleteAgentPool(pool.id));
  await step("getAgentPool(deleted) is null", async () => {
    assert.equal(await api.getAgentPool(pool.id), null);
  });
  console.log("node sdk: every agent and pool call passed");
}

main().catch((err) => {
  console.error(`node sdk: FAIL ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});

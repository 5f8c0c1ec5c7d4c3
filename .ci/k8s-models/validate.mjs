// Validates Kubernetes manifests (a JSON array in the file given) against the published
// schemas: kubernetes-models (the Kubernetes OpenAPI) and @kubernetes-models/gateway-api
// (the Gateway API CRDs). Prints one line per manifest; exit 1 when any is invalid.
import { readFileSync } from "node:fs";
import { Deployment } from "kubernetes-models/apps/v1";
import { Service } from "kubernetes-models/v1";
import { HTTPRoute } from "@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1";

const models = {
  "apps/v1 Deployment": Deployment,
  "v1 Service": Service,
  "gateway.networking.k8s.io/v1 HTTPRoute": HTTPRoute,
};
let bad = 0;
for (const m of JSON.parse(readFileSync(process.argv[2], "utf8"))) {
  const key = `${m.apiVersion} ${m.kind}`;
  const Model = models[key];
  const name = `${key} ${m.metadata?.name}`;
  if (!Model) {
    console.log(`UNKNOWN ${name}`);
    bad++;
    continue;
  }
  try {
    new Model(m).validate();
    console.log(`ok ${name}`);
  } catch (e) {
    console.log(`INVALID ${name}: ${e.message}`);
    bad++;
  }
}
process.exit(bad ? 1 : 0);

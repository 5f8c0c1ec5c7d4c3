package kubernetes

import rego.v1

deployment(container) := {
	"kind": "Deployment",
	"metadata": {"name": "web"},
	"spec": {"template": {"spec": {"containers": [container]}}},
}

limited := {"limits": {"cpu": "100m", "memory": "64Mi"}}

test_latest_and_untagged_images_denied if {
	count(deny_latest_tag) == 1 with input as deployment({"name": "a", "image": "nginx:latest"})
	count(deny_latest_tag) == 1 with input as deployment({"name": "a", "image": "ghcr.io/acme/web"})
}

test_pinned_images_allowed if {
	count(deny_latest_tag) == 0 with input as deployment({"name": "a", "image": "nginx:1.27.0"})
	count(deny_latest_tag) == 0 with input as deployment({"name": "a", "image": "localhost:5000/web@sha256:abc"})
	count(deny_latest_tag) == 0 with input as deployment({"name": "a", "image": "localhost:5000/web:2"})
}

test_limits_required if {
	count(deny_missing_limits) == 2 with input as deployment({"name": "a", "image": "x:1"})
	count(deny_missing_limits) == 0 with input as deployment({"name": "a", "image": "x:1", "resources": limited})
}

test_privileged_denied if {
	count(deny_privileged) == 1 with input as deployment({"name": "a", "image": "x:1", "securityContext": {"privileged": true}})
	count(deny_privileged) == 0 with input as deployment({"name": "a", "image": "x:1", "securityContext": {"privileged": false}})
}

test_pods_and_cronjobs_are_checked if {
	pod := {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"hostPID": true, "containers": [{"name": "a", "image": "x:1"}]}}
	count(deny_privileged) == 1 with input as pod
	cron := {"kind": "CronJob", "metadata": {"name": "c"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:latest"}]}}}}}}
	count(deny_latest_tag) == 1 with input as cron
}

test_plaintext_secret_denied if {
	count(deny_plaintext_secret) == 1 with input as {"kind": "Secret", "metadata": {"name": "db"}}
	count(deny_plaintext_secret) == 0 with input as {"kind": "SealedSecret", "metadata": {"name": "db"}}
}

# Terraform plans (`terraform show -json`): no public S3 buckets, tags required.
package main

import rego.v1

changed contains rc if {
	some rc in input.resource_changes
	some action in rc.change.actions
	action in {"create", "update"}
}

deny contains msg if {
	some rc in changed
	rc.type == "aws_s3_bucket_acl"
	rc.change.after.acl in {"public-read", "public-read-write"}
	msg := sprintf("%s: S3 bucket ACL \"%s\" makes the bucket public", [rc.address, rc.change.after.acl])
}

deny_open_admin_ports contains {"msg": msg, "resource": rc.address} if {
	some rc in changed
	rc.type == "aws_security_group_rule"
	rc.change.after.type == "ingress"
	"0.0.0.0/0" in rc.change.after.cidr_blocks
	rc.change.after.from_port <= data.admin_ports[_]
	data.admin_ports[_] <= rc.change.after.to_port
	msg := sprintf("%s: ingress from 0.0.0.0/0 on admin ports %d-%d", [rc.address, rc.change.after.from_port, rc.change.after.to_port])
}

warn contains msg if {
	some rc in changed
	startswith(rc.type, "aws_")
	not rc.change.after.tags.owner
	rc.type != "aws_s3_bucket_acl"
	rc.type != "aws_security_group_rule"
	msg := sprintf("%s: no `owner` tag", [rc.address])
}

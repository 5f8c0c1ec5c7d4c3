# Maestro starter bundle: Terraform plans (`terraform show -json`).
package terraform

import rego.v1

# The plan creates or updates the resource (deletions are not judged). A function, not a
# set of changes: building a set hashes every whole resource object, which costs more than
# the checks themselves on a large plan.
writes(rc) if {
	some action in rc.change.actions
	action in {"create", "update"}
}

deny_public_s3 contains msg if {
	some rc in input.resource_changes
	rc.type == "aws_s3_bucket_acl"
	writes(rc)
	rc.change.after.acl in {"public-read", "public-read-write", "authenticated-read"}
	msg := sprintf("%s: ACL \"%s\" makes the S3 bucket public", [rc.address, rc.change.after.acl])
}

deny_public_s3 contains msg if {
	some rc in input.resource_changes
	rc.type == "aws_s3_bucket_public_access_block"
	writes(rc)
	some setting in ["block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"]
	rc.change.after[setting] == false
	msg := sprintf("%s: %s is false, so the bucket can become public", [rc.address, setting])
}

deny_open_admin_ingress contains msg if {
	some rc in input.resource_changes
	rc.type == "aws_security_group_rule"
	writes(rc)
	rc.change.after.type == "ingress"
	some cidr in object.get(rc.change.after, "cidr_blocks", [])
	cidr in {"0.0.0.0/0", "::/0"}
	some port in data.maestro.admin_ports
	rc.change.after.from_port <= port
	port <= rc.change.after.to_port
	msg := sprintf("%s: ingress from %s reaches admin port %d", [rc.address, cidr, port])
}

deny_open_admin_ingress contains msg if {
	some rc in input.resource_changes
	rc.type == "aws_security_group"
	writes(rc)
	some rule in object.get(rc.change.after, "ingress", [])
	some cidr in object.get(rule, "cidr_blocks", [])
	cidr in {"0.0.0.0/0", "::/0"}
	some port in data.maestro.admin_ports
	rule.from_port <= port
	port <= rule.to_port
	msg := sprintf("%s: ingress from %s reaches admin port %d", [rc.address, cidr, port])
}

encrypted_attribute := {
	"aws_db_instance": "storage_encrypted",
	"aws_rds_cluster": "storage_encrypted",
	"aws_ebs_volume": "encrypted",
	"aws_efs_file_system": "encrypted",
}

deny_unencrypted_storage contains msg if {
	some rc in input.resource_changes
	attr := encrypted_attribute[rc.type]
	writes(rc)
	not rc.change.after[attr] == true
	msg := sprintf("%s: encryption at rest is off (%s is not true)", [rc.address, attr])
}

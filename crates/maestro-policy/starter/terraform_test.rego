package terraform

import rego.v1

plan(type, after) := {"resource_changes": [{
	"address": sprintf("%s.x", [type]),
	"type": type,
	"change": {"actions": ["create"], "after": after},
}]}

admin := {"maestro": {"admin_ports": [22, 5432]}}

test_public_acl_denied if {
	count(deny_public_s3) == 1 with input as plan("aws_s3_bucket_acl", {"acl": "public-read"})
}

test_private_acl_allowed if {
	count(deny_public_s3) == 0 with input as plan("aws_s3_bucket_acl", {"acl": "private"})
}

test_public_access_block_off_denied if {
	count(deny_public_s3) == 1 with input as plan("aws_s3_bucket_public_access_block", {
		"block_public_acls": true, "block_public_policy": false,
		"ignore_public_acls": true, "restrict_public_buckets": true,
	})
}

test_ssh_from_anywhere_denied if {
	r := {"type": "ingress", "from_port": 0, "to_port": 65535, "cidr_blocks": ["0.0.0.0/0"]}
	count(deny_open_admin_ingress) == 2 with input as plan("aws_security_group_rule", r) with data.maestro as admin.maestro
}

test_https_from_anywhere_allowed if {
	r := {"type": "ingress", "from_port": 443, "to_port": 443, "cidr_blocks": ["0.0.0.0/0"]}
	count(deny_open_admin_ingress) == 0 with input as plan("aws_security_group_rule", r) with data.maestro as admin.maestro
}

test_inline_security_group_rules_checked if {
	sg := {"ingress": [{"from_port": 22, "to_port": 22, "cidr_blocks": ["::/0"]}]}
	count(deny_open_admin_ingress) == 1 with input as plan("aws_security_group", sg) with data.maestro as admin.maestro
}

test_unencrypted_database_denied if {
	count(deny_unencrypted_storage) == 1 with input as plan("aws_db_instance", {"storage_encrypted": false})
	count(deny_unencrypted_storage) == 1 with input as plan("aws_ebs_volume", {})
}

test_encrypted_database_allowed if {
	count(deny_unencrypted_storage) == 0 with input as plan("aws_db_instance", {"storage_encrypted": true})
}

test_deletions_not_judged if {
	p := {"resource_changes": [{"address": "aws_db_instance.x", "type": "aws_db_instance", "change": {"actions": ["delete"], "after": null}}]}
	count(deny_unencrypted_storage) == 0 with input as p
}

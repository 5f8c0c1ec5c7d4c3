package main

import rego.v1

public_acl := {"resource_changes": [{
	"address": "aws_s3_bucket_acl.site",
	"type": "aws_s3_bucket_acl",
	"change": {"actions": ["create"], "after": {"acl": "public-read"}},
}]}

test_public_acl_is_denied if {
	count(deny) == 1 with input as public_acl
}

test_private_acl_is_allowed if {
	count(deny) == 0 with input as {"resource_changes": [{
		"address": "aws_s3_bucket_acl.site",
		"type": "aws_s3_bucket_acl",
		"change": {"actions": ["create"], "after": {"acl": "private"}},
	}]}
}

test_deleted_resources_are_not_judged if {
	count(deny) == 0 with input as {"resource_changes": [{
		"address": "aws_s3_bucket_acl.site",
		"type": "aws_s3_bucket_acl",
		"change": {"actions": ["delete"], "after": null},
	}]}
}

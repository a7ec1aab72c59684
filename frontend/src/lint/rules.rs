//! The rules of BuildKit's Dockerfile linter (`frontend/dockerfile/linter/ruleset.go`):
//! the same names, descriptions, documentation URLs and messages, so that a
//! check prints what `docker buildx build --check` prints.

/// One lint rule.
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    /// The rule's name (`StageNameCasing`), as in `# check=skip=NAME`.
    pub name: &'static str,
    /// One sentence saying what the rule asks for.
    pub description: &'static str,
    /// Where the rule is documented (`None` for InvalidBaseImagePlatform, as in BuildKit).
    pub url: Option<&'static str>,
    /// Experimental rules run only when `# check=experimental=NAME|all` asks for them.
    pub experimental: bool,
}

const fn rule(name: &'static str, description: &'static str, url: &'static str) -> Rule {
    Rule { name, description, url: Some(url), experimental: false }
}

/// Stage names should be lowercase.
pub static STAGE_NAME_CASING: Rule = rule(
    "StageNameCasing",
    "Stage names should be lowercase",
    "https://docs.docker.com/go/dockerfile/rule/stage-name-casing/",
);
/// `AS` written in another case than `FROM`.
pub static FROM_AS_CASING: Rule = rule(
    "FromAsCasing",
    "The 'as' keyword should match the case of the 'from' keyword",
    "https://docs.docker.com/go/dockerfile/rule/from-as-casing/",
);
/// An empty line inside a continued instruction.
pub static NO_EMPTY_CONTINUATION: Rule = rule(
    "NoEmptyContinuation",
    "Empty continuation lines will become errors in a future release",
    "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/",
);
/// Instruction keywords in mixed case, or against the file's majority.
pub static CONSISTENT_INSTRUCTION_CASING: Rule = rule(
    "ConsistentInstructionCasing",
    "All commands within the Dockerfile should use the same casing (either upper or lower)",
    "https://docs.docker.com/go/dockerfile/rule/consistent-instruction-casing/",
);
/// Two stages with one name.
pub static DUPLICATE_STAGE_NAME: Rule = rule(
    "DuplicateStageName",
    "Stage names should be unique",
    "https://docs.docker.com/go/dockerfile/rule/duplicate-stage-name/",
);
/// A stage named `scratch` or `context`.
pub static RESERVED_STAGE_NAME: Rule = rule(
    "ReservedStageName",
    "Reserved words should not be used as stage names",
    "https://docs.docker.com/go/dockerfile/rule/reserved-stage-name/",
);
/// CMD/ENTRYPOINT in shell form.
pub static JSON_ARGS_RECOMMENDED: Rule = rule(
    "JSONArgsRecommended",
    "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals",
    "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/",
);
/// MAINTAINER.
pub static MAINTAINER_DEPRECATED: Rule = rule(
    "MaintainerDeprecated",
    "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
    "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/",
);
/// FROM uses a variable no global ARG declares.
pub static UNDEFINED_ARG_IN_FROM: Rule = rule(
    "UndefinedArgInFrom",
    "FROM command must use declared ARGs",
    "https://docs.docker.com/go/dockerfile/rule/undefined-arg-in-from/",
);
/// The first WORKDIR of a stage chain is relative.
pub static WORKDIR_RELATIVE_PATH: Rule = rule(
    "WorkdirRelativePath",
    "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes",
    "https://docs.docker.com/go/dockerfile/rule/workdir-relative-path/",
);
/// A variable used before any ARG/ENV defines it.
pub static UNDEFINED_VAR: Rule = rule(
    "UndefinedVar",
    "Variables should be defined before their use",
    "https://docs.docker.com/go/dockerfile/rule/undefined-var/",
);
/// Two CMD/ENTRYPOINT/HEALTHCHECK in one stage.
pub static MULTIPLE_INSTRUCTIONS_DISALLOWED: Rule = rule(
    "MultipleInstructionsDisallowed",
    "Multiple instructions of the same type should not be used in the same stage",
    "https://docs.docker.com/go/dockerfile/rule/multiple-instructions-disallowed/",
);
/// `ENV key value` / `LABEL key value`.
pub static LEGACY_KEY_VALUE_FORMAT: Rule = rule(
    "LegacyKeyValueFormat",
    "Legacy key/value format with whitespace separator should not be used",
    "https://docs.docker.com/go/dockerfile/rule/legacy-key-value-format/",
);
/// The base image's platform is not the one the build targets.
pub static INVALID_BASE_IMAGE_PLATFORM: Rule = Rule {
    name: "InvalidBaseImagePlatform",
    description: "Base image platform does not match expected target platform",
    url: None,
    experimental: false,
};
/// `FROM --platform=$TARGETPLATFORM`.
pub static REDUNDANT_TARGET_PLATFORM: Rule = rule(
    "RedundantTargetPlatform",
    "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
    "https://docs.docker.com/go/dockerfile/rule/redundant-target-platform/",
);
/// ARG/ENV names that look like secrets.
pub static SECRETS_USED_IN_ARG_OR_ENV: Rule = rule(
    "SecretsUsedInArgOrEnv",
    "Sensitive data should not be used in the ARG or ENV commands",
    "https://docs.docker.com/go/dockerfile/rule/secrets-used-in-arg-or-env/",
);
/// FROM gives no valid image name with the global ARGs' defaults.
pub static INVALID_DEFAULT_ARG_IN_FROM: Rule = rule(
    "InvalidDefaultArgInFrom",
    "Default value for global ARG results in an empty or invalid base image name",
    "https://docs.docker.com/go/dockerfile/rule/invalid-default-arg-in-from/",
);
/// `FROM --platform=linux/amd64` (a constant).
pub static FROM_PLATFORM_FLAG_CONST_DISALLOWED: Rule = rule(
    "FromPlatformFlagConstDisallowed",
    "FROM --platform flag should not use a constant value",
    "https://docs.docker.com/go/dockerfile/rule/from-platform-flag-const-disallowed/",
);
/// COPY/ADD of a path `.dockerignore` excludes (experimental in the
/// BuildKit of Docker 28, v0.25, which is our reference).
pub static COPY_IGNORED_FILE: Rule = Rule {
    name: "CopyIgnoredFile",
    description: "Attempting to Copy file that is excluded by .dockerignore",
    url: Some("https://docs.docker.com/go/dockerfile/rule/copy-ignored-file/"),
    experimental: true,
};
/// A comment above FROM/ARG that does not start with the stage/arg name (experimental).
pub static INVALID_DEFINITION_DESCRIPTION: Rule = Rule {
    name: "InvalidDefinitionDescription",
    description: "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`. If this is not intended to be a description comment, add an empty line or comment between the instruction and the comment.",
    url: Some("https://docs.docker.com/go/dockerfile/rule/invalid-definition-description/"),
    experimental: true,
};
/// `EXPOSE 80/TCP`.
pub static EXPOSE_PROTO_CASING: Rule = rule(
    "ExposeProtoCasing",
    "Protocol in EXPOSE instruction should be lowercase",
    "https://docs.docker.com/go/dockerfile/rule/expose-proto-casing/",
);
/// `EXPOSE 127.0.0.1:80:80`.
pub static EXPOSE_INVALID_FORMAT: Rule = rule(
    "ExposeInvalidFormat",
    "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release",
    "https://docs.docker.com/go/dockerfile/rule/expose-invalid-format/",
);

/// Every rule, in BuildKit's order.
pub static ALL: [&Rule; 22] = [
    &STAGE_NAME_CASING,
    &FROM_AS_CASING,
    &NO_EMPTY_CONTINUATION,
    &CONSISTENT_INSTRUCTION_CASING,
    &DUPLICATE_STAGE_NAME,
    &RESERVED_STAGE_NAME,
    &JSON_ARGS_RECOMMENDED,
    &MAINTAINER_DEPRECATED,
    &UNDEFINED_ARG_IN_FROM,
    &WORKDIR_RELATIVE_PATH,
    &UNDEFINED_VAR,
    &MULTIPLE_INSTRUCTIONS_DISALLOWED,
    &LEGACY_KEY_VALUE_FORMAT,
    &INVALID_BASE_IMAGE_PLATFORM,
    &REDUNDANT_TARGET_PLATFORM,
    &SECRETS_USED_IN_ARG_OR_ENV,
    &INVALID_DEFAULT_ARG_IN_FROM,
    &FROM_PLATFORM_FLAG_CONST_DISALLOWED,
    &COPY_IGNORED_FILE,
    &INVALID_DEFINITION_DESCRIPTION,
    &EXPOSE_PROTO_CASING,
    &EXPOSE_INVALID_FORMAT,
];

/// Go's `%q` of a string (the quoting BuildKit's messages use).
pub fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The messages, one function per rule (BuildKit's `Format`).
pub mod msg {
    use super::go_quote;

    /// StageNameCasing.
    pub fn stage_name_casing(name: &str) -> String {
        format!("Stage name '{name}' should be lowercase")
    }
    /// FromAsCasing: `from` and `as` as written.
    pub fn from_as_casing(from: &str, as_kw: &str) -> String {
        format!("'{as_kw}' and '{from}' keywords' casing do not match")
    }
    /// NoEmptyContinuation.
    pub fn no_empty_continuation() -> String {
        "Empty continuation line".into()
    }
    /// ConsistentInstructionCasing.
    pub fn consistent_instruction_casing(command: &str, casing: &str) -> String {
        format!("Command '{command}' should match the case of the command majority ({casing})")
    }
    /// DuplicateStageName.
    pub fn duplicate_stage_name(name: &str) -> String {
        format!("Duplicate stage name {}, stage names should be unique", go_quote(name))
    }
    /// ReservedStageName.
    pub fn reserved_stage_name(name: &str) -> String {
        format!("Stage name should not use the same name as reserved stage {}", go_quote(name))
    }
    /// JSONArgsRecommended.
    pub fn json_args_recommended(instruction: &str) -> String {
        format!("JSON arguments recommended for {instruction} to prevent unintended behavior related to OS signals")
    }
    /// MaintainerDeprecated.
    pub fn maintainer_deprecated() -> String {
        "Maintainer instruction is deprecated in favor of using label".into()
    }
    /// UndefinedArgInFrom.
    pub fn undefined_arg_in_from(arg: &str, suggest: Option<&str>) -> String {
        let mut out = format!("FROM argument '{arg}' is not declared");
        if let Some(s) = suggest {
            out.push_str(&format!(" (did you mean {s}?)"));
        }
        out
    }
    /// WorkdirRelativePath.
    pub fn workdir_relative_path(workdir: &str) -> String {
        format!("Relative workdir {} can have unexpected results if the base image changes", go_quote(workdir))
    }
    /// UndefinedVar.
    pub fn undefined_var(var: &str, suggest: Option<&str>) -> String {
        let mut out = format!("Usage of undefined variable '${var}'");
        if let Some(s) = suggest {
            out.push_str(&format!(" (did you mean ${s}?)"));
        }
        out
    }
    /// MultipleInstructionsDisallowed.
    pub fn multiple_instructions_disallowed(instruction: &str) -> String {
        format!("Multiple {instruction} instructions should not be used in the same stage because only the last one will be used")
    }
    /// LegacyKeyValueFormat.
    pub fn legacy_key_value_format(command: &str) -> String {
        format!("\"{command} key=value\" should be used instead of legacy \"{command} key value\" format")
    }
    /// InvalidBaseImagePlatform.
    pub fn invalid_base_image_platform(image: &str, expected: &str, actual: &str) -> String {
        format!("Base image {image} was pulled with platform {}, expected {} for current build", go_quote(actual), go_quote(expected))
    }
    /// RedundantTargetPlatform.
    pub fn redundant_target_platform(platform_var: &str) -> String {
        format!("Setting platform to predefined {platform_var} in FROM is redundant as this is the default behavior")
    }
    /// SecretsUsedInArgOrEnv.
    pub fn secrets_used_in_arg_or_env(instruction: &str, key: &str) -> String {
        format!("Do not use ARG or ENV instructions for sensitive data ({instruction} {})", go_quote(key))
    }
    /// InvalidDefaultArgInFrom.
    pub fn invalid_default_arg_in_from(base: &str) -> String {
        format!("Default value for ARG {base} results in empty or invalid base image name")
    }
    /// FromPlatformFlagConstDisallowed.
    pub fn from_platform_flag_const_disallowed(platform: &str) -> String {
        format!("FROM --platform flag should not use constant value {}", go_quote(platform))
    }
    /// CopyIgnoredFile: `cmd` is `Copy` or `Add`.
    pub fn copy_ignored_file(cmd: &str, file: &str) -> String {
        format!("Attempting to {cmd} file {} that is excluded by .dockerignore", go_quote(file))
    }
    /// InvalidDefinitionDescription.
    pub fn invalid_definition_description(instruction: &str, name: &str) -> String {
        format!("Comment for {instruction} should follow the format: `# {name} <description>`")
    }
    /// ExposeProtoCasing.
    pub fn expose_proto_casing(port: &str) -> String {
        format!("Defined protocol '{port}' in EXPOSE instruction should be lowercase")
    }
    /// ExposeInvalidFormat.
    pub fn expose_invalid_format(port: &str) -> String {
        format!("EXPOSE instruction should not define an IP address or host-port mapping, found '{port}'")
    }
}

//! Arguments: help, version, and one-line usage errors with exit code 2.

use crate::support::run;

#[test]
fn help_and_version_exit_0() {
    let help = run(&["--help"]);
    help.exits(0);
    for sub in ["check", "explain", "call", "echo", "status-controller"] {
        assert!(help.stdout.contains(sub), "{sub} in help");
    }
    assert!(help.stdout.contains("Exit codes: 0"));
    let call = run(&["call", "--help"]);
    call.exits(0);
    assert!(call.stdout.contains("--concurrency <C>"));
    let version = run(&["--version"]);
    version.exits(0);
    assert!(version.stdout.starts_with("grpcroute "));
}

#[test]
fn bad_arguments_are_one_line_errors() {
    run(&[]).input_error(&["a subcommand is required"]);
    run(&["frobnicate"]).input_error(&["frobnicate"]);
    run(&["check"]).input_error(&["--filename"]);
    run(&["check", "-f", "shop", "--bogus"]).input_error(&["--bogus"]);
    run(&["explain", "-f", "shop", "--method", "/a.B/C"]).input_error(&["--to"]);
    let explain = |extra: &[&'static str]| {
        let mut args = vec![
            "explain",
            "-f",
            "shop",
            "--to",
            "checkout.shop:50051",
            "--method",
            "/a.B/C",
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    explain(&["--from-namespace", "Not_A_Namespace"])
        .input_error(&["--from-namespace", "Not_A_Namespace"]);
    explain(&["-H", "no-colon"]).input_error(&["--header", "no-colon", "NAME:VALUE"]);
    explain(&["-H", "bad name:x"]).input_error(&["--header", "not a valid metadata name"]);
    run(&[
        "explain",
        "-f",
        "shop",
        "--to",
        "checkout.shop",
        "--method",
        "a.B/C",
    ])
    .input_error(&["--method", "a.B/C", "/package.Service/Method"]);
    let call = |extra: &[&'static str]| {
        let mut args = vec![
            "call",
            "-f",
            "shop",
            "--to",
            "checkout.shop:50051",
            "--method",
            "/a.B/C",
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    call(&["-n", "0"]).input_error(&["--count", "0"]);
    call(&["-n", "many"]).input_error(&["--count", "many"]);
    call(&["-c", "0"]).input_error(&["--concurrency"]);
    call(&["-d", "0a1"]).input_error(&["--data", "even number"]);
    call(&["-d", "xyz!"]).input_error(&["--data", "not hex"]);
    call(&["-d", "@no-such-payload.bin"]).input_error(&["--data", "no-such-payload.bin"]);
    call(&["--timeout", "0"]).input_error(&["--timeout", "positive"]);
    run(&["echo"]).input_error(&["--listen"]);
    run(&["echo", "--listen", "localhost"]).input_error(&["--listen", "localhost"]);
}

#compdef shrike

_shrike_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _SHRIKE_COMPLETE=complete_zsh shrike)
}

if [[ $zsh_eval_context[-1] == (loadautofunc|shfunc) ]]; then
    # autoloaded from $fpath: this file is the body of _shrike, run at each TAB
    _shrike_completion "$@"
else
    # sourced, e.g. from ~/.zshrc after compinit
    compdef _shrike_completion shrike
fi
